"""Where a command finds the mesh: one resolution for every ``flywheel`` command.

Each value is taken from the first of these that has it:

1. an explicit variable: ``FLYWHEEL_KAFKA_BOOTSTRAP``, ``FLYWHEEL_REDIS_URL``,
   ``FLYWHEEL_NAMESPACE``, ``FLYWHEEL_REGISTRY_URI``, ``FLYWHEEL_SPEC_PATH``,
   ``FLYWHEEL_<SERVICE>_GRPC_HOST`` / ``_GRPC_PORT`` (either one names the service; the other
   part takes its default);
2. the running mesh's state, ``<home>/mesh.json``, written by ``flywheel up``;
3. for Kafka and Redis, the local infrastructure's state, ``<home>/infra/state.json``
   (``flywheel infra up``), while its processes run;
4. a default, where one makes sense: namespace empty, spec ``./flywheel.yaml``, the registry
   ``<home>/registry`` when that folder exists; and, when there is no mesh state but the
   environment names Kafka or Redis (a compose or Kubernetes mesh reached through its
   ports), each service at ``127.0.0.1`` on its default port.

``home`` is ``$FLYWHEEL_HOME``, else the nearest ``.flywheel`` folder holding a state, else
``./.flywheel`` (``flywheel.infra.home``). Whatever is still unknown stays None, and
``MeshContext.require`` turns it into ``MeshNotUp``: one line that says what to run.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flywheel.infra.home import home_dir
from flywheel.mesh import state as state_file
from flywheel.mesh.services import SERVICES
from flywheel.mesh.state import MeshState

#: What a command may need: the infrastructure, the registry, or services by name.
INFRA_PARTS = ("kafka", "redis", "registry")
ALL_SERVICES = tuple(s.name for s in SERVICES)


class MeshNotUp(Exception):
    """A command needs a part of the mesh that neither the environment nor a state names."""


@dataclass(frozen=True)
class MeshContext:
    """The resolved settings of the mesh a command talks to.

    ``origins`` says where each value came from: the variable's name, ``mesh state``,
    ``infra state`` or ``default``; a value not found is None and has no origin.
    """

    home: Path
    namespace: str
    spec_path: Path
    kafka_bootstrap: str | None
    redis_url: str | None
    registry_uri: str | None
    grpc: dict[str, str]
    state: MeshState | None = None
    origins: dict[str, str] = field(default_factory=dict)
    # A secured mesh's FLYWHEEL_GRPC_* and FLYWHEEL_KAFKA_* for the operator (its
    # certificate, token and Kafka user), where no such variable was given explicitly.
    secure_env: dict[str, str] = field(default_factory=dict)

    @property
    def state_file(self) -> Path:
        return self.home / "mesh.json"

    def require(self, needs: Iterable[str]) -> MeshContext:
        """Returns self when every need is known; else raises ``MeshNotUp`` naming them.

        A need is ``kafka``, ``redis``, ``registry`` or a service name.
        """
        values = {"kafka": self.kafka_bootstrap, "redis": self.redis_url,
                  "registry": self.registry_uri}
        missing = [n for n in needs if (values[n] if n in values else self.grpc.get(n)) is None]
        unknown = [n for n in missing if n not in values and n not in ALL_SERVICES]
        if unknown:
            raise ValueError(f"unknown parts of the mesh: {unknown}")
        if missing:
            raise MeshNotUp(
                f"the mesh is not up (no {self.state_file}); run `flywheel up`, or point "
                f"FLYWHEEL_HOME at the folder of a running mesh"
            )
        return self

    def address(self, service: str) -> str:
        """``host:port`` of a service's gRPC server; ``MeshNotUp`` when unknown."""
        return self.require([service]).grpc[service]

    def common_settings(self, **overrides: Any):
        """``CommonSettings`` with the resolved values (the rest, such as timeouts and the log
        level, from FLYWHEEL_* as usual); ``overrides`` win."""
        from flywheel.common.settings import CommonSettings

        return CommonSettings(**{**self._values(), **self._secure_values(), **overrides})

    @property
    def grpc_security(self):
        """How this command dials the services (`GrpcSecuritySettings`): FLYWHEEL_GRPC_*, or
        a secured mesh's operator certificate and token."""
        return self.common_settings().grpc_security

    def environ(self) -> dict[str, str]:
        """The resolved values as FLYWHEEL_* variables, for a process this command starts."""
        env = {f"FLYWHEEL_{key.upper()}": str(value) for key, value in self._values().items()}
        env["FLYWHEEL_HOME"] = str(self.home)
        env.update(self.secure_env)
        return env

    def _secure_values(self) -> dict[str, Any]:
        from flywheel.common.settings import GrpcSecuritySettings

        values: dict[str, Any] = {}
        grpc = {}
        for key, value in self.secure_env.items():
            if key.startswith("FLYWHEEL_GRPC_"):
                grpc[key.removeprefix("FLYWHEEL_GRPC_").lower()] = value
            else:
                values[key.removeprefix("FLYWHEEL_").lower()] = value
        if grpc:
            values["grpc_security"] = GrpcSecuritySettings(**grpc)
        return values

    def _values(self) -> dict[str, Any]:
        values = {"namespace": self.namespace, "spec_path": self.spec_path,
                  "kafka_bootstrap": self.kafka_bootstrap, "redis_url": self.redis_url,
                  "registry_uri": self.registry_uri}
        return {key: value for key, value in values.items() if value is not None}


def resolve(environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> MeshContext:
    """The context seen from ``cwd`` with ``environ`` (default: this process's). Reads the
    state files; contacts nothing. A corrupt mesh state raises ValueError."""
    env = os.environ if environ is None else environ
    base = (cwd or Path.cwd()).resolve()
    home = home_dir(env, base)
    state = state_file.load(home / "mesh.json")
    origins: dict[str, str] = {}

    def pick(key: str, variable: str, recorded: str | None, fallback: str | None = None):
        for origin, value in ((variable, env.get(variable)), ("mesh state", recorded),
                              ("default", fallback)):
            if value:
                origins[key] = origin
                return value
        return None

    infra = _infra_addresses(env, base) if state is None else {}
    kafka = pick("kafka_bootstrap", "FLYWHEEL_KAFKA_BOOTSTRAP",
                 state.kafka_bootstrap if state else None)
    if kafka is None and infra.get("kafka"):
        kafka, origins["kafka_bootstrap"] = infra["kafka"], "infra state"
    material = state_file.secure_material(state)
    secure_env: dict[str, str] = {}
    if material is not None:
        from flywheel.infra.secure import OPERATOR

        secure = {**material.grpc_env(OPERATOR), **material.kafka_env(OPERATOR)}
        explicit_grpc = any(k.startswith("FLYWHEEL_GRPC_") for k in env)
        explicit_kafka = any(k.startswith("FLYWHEEL_KAFKA_S") for k in env)
        secure_env = {k: v for k, v in secure.items()
                      if not (explicit_grpc and k.startswith("FLYWHEEL_GRPC_"))
                      and not (explicit_kafka and k.startswith("FLYWHEEL_KAFKA_"))}
    recorded_redis = state.redis_url if state else None
    if material is not None and recorded_redis:
        parts = urlsplit(recorded_redis)
        recorded_redis = material.redis_url(parts.hostname, parts.port, OPERATOR)
    redis = pick("redis_url", "FLYWHEEL_REDIS_URL", recorded_redis)
    if redis is None and infra.get("redis"):
        redis, origins["redis_url"] = infra["redis"], "infra state"
    registry_dir = home / "registry"
    registry = pick("registry_uri", "FLYWHEEL_REGISTRY_URI", state.registry_uri if state else None,
                    str(registry_dir) if registry_dir.is_dir() else None)
    if registry is not None and "://" not in registry:
        registry = str((base / registry).resolve())
    spec = Path(pick("spec_path", "FLYWHEEL_SPEC_PATH", state.spec_path if state else None,
                     "flywheel.yaml"))
    namespace = pick("namespace", "FLYWHEEL_NAMESPACE", state.namespace if state else None) or ""
    grpc = {}
    for service in SERVICES:
        address = _explicit_address(env, service)
        origin = f"{service.env_prefix}GRPC_HOST/_PORT"
        if address is None and state is not None and service.name in state.services:
            address, origin = state.address(service.name), "mesh state"
        if address is None and state is None and _names_infra(env):
            address, origin = f"127.0.0.1:{service.grpc_port}", "default"
        if address is not None:
            grpc[service.name], origins[service.name] = address, origin
    return MeshContext(
        home=home, namespace=namespace, spec_path=(base / spec).resolve(),
        kafka_bootstrap=kafka, redis_url=redis, registry_uri=registry, grpc=grpc,
        state=state, origins=origins, secure_env=secure_env,
    )


def _names_infra(env: Mapping[str, str]) -> bool:
    return bool(env.get("FLYWHEEL_KAFKA_BOOTSTRAP") or env.get("FLYWHEEL_REDIS_URL"))


def _explicit_address(env: Mapping[str, str], service) -> str | None:
    host = env.get(f"{service.env_prefix}GRPC_HOST")
    port = env.get(service.grpc_port_env)
    if not host and not port:
        return None
    return f"{host or '127.0.0.1'}:{port or service.grpc_port}"


def _infra_addresses(env: Mapping[str, str], cwd: Path) -> dict[str, str]:
    """Addresses of the local Kafka and Redis of this home whose processes still run."""
    from flywheel.infra import InfraError, InfraSettings, LocalInfra

    try:
        status = LocalInfra(settings=InfraSettings.from_env(env, cwd)).status(probe=False)
    except InfraError:
        return {}
    return {c.name: c.address for c in (status.kafka, status.redis)
            if c is not None and c.source == "local" and c.running}
