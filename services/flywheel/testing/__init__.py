"""Test support: the pytest plugin ``flywheel.testing.fixtures`` and its helpers.

Load it from a conftest with ``pytest_plugins = ["flywheel.testing.fixtures"]``.
"""

from flywheel.testing.endpoints import Endpoints
from flywheel.testing.names import Names

__all__ = ["Endpoints", "Names"]
