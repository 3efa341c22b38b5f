"""What the supervisor needs to know, read once from the environment and frozen."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from flywheel.common.settings import CommonSettings
from flywheel.infra.home import home_dir
from flywheel.mesh.backoff import BackoffPolicy
from flywheel.mesh.services import SERVICES


@dataclass(frozen=True)
class MeshSettings:
    """``ports`` maps a service to its (gRPC, metrics) ports; None means "pick a free one".

    ``environ`` is the environment the services inherit (plus what the supervisor sets).
    ``python`` runs the services, ``supervisor_python`` the process that restarts them
    (with ``restart_backoff`` between the restarts of a service that keeps exiting).
    ``secure``: the infrastructure and every hop secured (``flywheel up --secure``).
    """

    home: Path
    namespace: str
    spec_path: Path
    registry_uri: str
    ports: dict[str, tuple[int | None, int | None]]
    environ: dict[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    python: str = sys.executable
    supervisor_python: str = sys.executable
    restart_backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    start_timeout_s: float = 120.0
    stop_timeout_s: float = 20.0
    secure: bool = False

    @property
    def state_file(self) -> Path:
        return self.home / "mesh.json"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def infra_root(self) -> Path:
        return self.home / "infra"

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        free_ports: bool = False,
        namespace: str | None = None,
        cwd: Path | None = None,
        **overrides,
    ) -> MeshSettings:
        """Ports come from ``FLYWHEEL_<SERVICE>_GRPC_PORT`` / ``_METRICS_PORT``, else the
        defaults (or free ones with ``free_ports``). A relative spec path or registry
        directory is resolved against ``cwd`` so every service sees the same one."""
        env = dict(os.environ if environ is None else environ)
        base = cwd or Path.cwd()
        given = {f: env[f"FLYWHEEL_{f.upper()}"] for f in ("namespace", "spec_path")
                 if f"FLYWHEEL_{f.upper()}" in env}
        if namespace is not None:
            given["namespace"] = namespace
        common = CommonSettings(**given)  # validates them as every service will
        home = home_dir(env, base)
        registry = env.get("FLYWHEEL_REGISTRY_URI") or str(home / "registry")
        if "://" not in registry:
            registry = str((base / registry).resolve())
        spec = common.spec_path if common.spec_path.is_absolute() else base / common.spec_path
        ports = {}
        for service in SERVICES:
            grpc_port = _port(env, service.grpc_port_env)
            metrics_port = _port(env, service.metrics_port_env)
            if not free_ports:
                grpc_port = grpc_port or service.grpc_port
                metrics_port = metrics_port or service.metrics_port
            ports[service.name] = (grpc_port, metrics_port)
        return cls(
            home=home,
            namespace=common.namespace,
            spec_path=spec.resolve(),
            registry_uri=registry,
            ports=ports,
            environ=env,
            **overrides,
        )


def _port(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        port = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a port number") from None
    return port or None
