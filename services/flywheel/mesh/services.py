"""The five services of the mesh: their modules, default ports and start order."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ServiceDef:
    """One service as the supervisor sees it.

    ``wave``: services of a lower wave are SERVING before the next wave starts (inference
    reads the feature store, so features comes first). ``links`` names the settings through
    which a service finds another one: env suffix (after ``FLYWHEEL_<NAME>_``) -> service.
    ``data_dirs``: env suffix -> folder under the mesh's home, for the state a service keeps
    on disk (so that FLYWHEEL_HOME holds everything of one mesh).
    """

    name: str
    grpc_port: int
    metrics_port: int
    wave: int
    links: dict[str, str] = field(default_factory=dict)
    data_dirs: dict[str, str] = field(default_factory=dict)

    @property
    def module(self) -> str:
        return f"flywheel.{self.name}"

    @property
    def env_prefix(self) -> str:
        return f"FLYWHEEL_{self.name.upper()}_"

    @property
    def grpc_port_env(self) -> str:
        return f"{self.env_prefix}GRPC_PORT"

    @property
    def metrics_port_env(self) -> str:
        return f"{self.env_prefix}METRICS_PORT"


SERVICES: tuple[ServiceDef, ...] = (
    ServiceDef("ingest", 50051, 9201, wave=1),
    ServiceDef("features", 50052, 9202, wave=0, data_dirs={"SNAPSHOT_DIR": "features"}),
    ServiceDef("inference", 50053, 9203, wave=2, links={"FEATURE_STORE_TARGET": "features"}),
    ServiceDef("feedback", 50054, 9204, wave=1),
    ServiceDef("training", 50055, 9205, wave=1, data_dirs={"DATA_DIR": "training"}),
)

BY_NAME = {service.name: service for service in SERVICES}


def waves() -> list[list[ServiceDef]]:
    """The services grouped by wave, lowest first."""
    numbers = sorted({service.wave for service in SERVICES})
    return [[s for s in SERVICES if s.wave == n] for n in numbers]
