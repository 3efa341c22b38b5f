"""What the supervisor needs to know, read once from the environment and frozen.

The variables are read through pydantic-settings: ``CommonSettings`` (namespace, spec,
registry) and each service's ``ServicePorts`` under its own prefix; ``MeshSettings.from_env``
resolves them against the home folder and the working directory."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from flywheel.common.environ import read_settings
from flywheel.common.settings import CommonSettings
from flywheel.infra.home import home_dir
from flywheel.mesh.backoff import BackoffPolicy
from flywheel.mesh.services import SERVICES


class ServicePorts(BaseSettings):
    """``FLYWHEEL_<SERVICE>_GRPC_PORT`` / ``_METRICS_PORT`` (read with the service's prefix);
    unset, empty or 0: the service's default, or a free port."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", env_ignore_empty=True)

    grpc_port: int | None = Field(None, ge=0, le=65535)
    metrics_port: int | None = Field(None, ge=0, le=65535)


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
        named = env if namespace is None else {**env, "FLYWHEEL_NAMESPACE": namespace}
        common = read_settings(CommonSettings, named)  # validated as every service will
        home = home_dir(env, base)
        # Unset or empty: the home's registry (CommonSettings' own default is for services).
        given_registry = "registry_uri" in common.model_fields_set and common.registry_uri
        registry = common.registry_uri if given_registry else str(home / "registry")
        if "://" not in registry:
            registry = str((base / registry).resolve())
        spec = common.spec_path if common.spec_path.is_absolute() else base / common.spec_path
        ports = {}
        for service in SERVICES:
            given = read_settings(ServicePorts, env, env_prefix=service.env_prefix)
            grpc_port, metrics_port = given.grpc_port or None, given.metrics_port or None
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

