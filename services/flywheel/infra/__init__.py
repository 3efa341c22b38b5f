"""Real local infrastructure: a single-node Kafka broker (KRaft) and a Redis server.

The public API is ``LocalInfra`` (up / down / status / fetch), the ``InfraStatus`` it
returns, ``InfraSettings`` and the errors. See ``flywheel.infra.local`` for an example.
"""

from flywheel.infra.errors import InfraError, MissingBinaryError
from flywheel.infra.local import ComponentStatus, InfraStatus, LocalInfra
from flywheel.infra.settings import InfraSettings

__all__ = [
    "ComponentStatus",
    "InfraError",
    "InfraSettings",
    "InfraStatus",
    "LocalInfra",
    "MissingBinaryError",
]
