"""The mesh supervisor: the five services as detached local processes.

Pure process management: ``Mesh(home).up()`` brings up the infrastructure (or takes the
addresses given by FLYWHEEL_KAFKA_BOOTSTRAP / FLYWHEEL_REDIS_URL), creates the topics, starts
``python -m flywheel.<service>`` for each service in dependency order and returns once each
answers SERVING on grpc.health.v1; ``down()`` stops exactly what ``up`` started.
"""

from flywheel.mesh.services import SERVICES, ServiceDef
from flywheel.mesh.state import MeshState, ServiceState
from flywheel.mesh.supervisor import Mesh, MeshError, MeshStatus, ServiceStatus

__all__ = [
    "SERVICES",
    "Mesh",
    "MeshError",
    "MeshState",
    "MeshStatus",
    "ServiceDef",
    "ServiceState",
    "ServiceStatus",
]
