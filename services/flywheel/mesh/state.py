"""``.flywheel/mesh.json``: what ``flywheel up`` started and where it listens.

``down`` stops exactly the processes named here; every other command reads the addresses
(``flywheel.mesh.context``). Written atomically after every process start, so an interrupted
``up`` can still be undone; ``up`` and the supervisor change it only under ``locked(home)``.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from flywheel.common.files import atomic_write_json

STATE_FORMAT = 1


@dataclass(frozen=True)
class ServiceState:
    name: str
    pid: int
    marker: str
    grpc_address: str
    grpc_port: int
    metrics_port: int
    log: str
    started_at: float
    #: Starts after the first one: by the supervisor, or by an ``up`` that healed the mesh.
    restarts: int = 0

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ServiceState:
        return cls(**_known(cls, raw))


@dataclass(frozen=True)
class SupervisorState:
    """The process that restarts services which exit unexpectedly (``flywheel.mesh.watchdog``)."""

    pid: int
    marker: str
    log: str
    started_at: float

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> SupervisorState:
        return cls(**_known(cls, raw))


def _known(cls: type, raw: dict[str, Any]) -> dict[str, Any]:
    """The fields ``cls`` has: a state written by a newer version still loads."""
    names = {f.name for f in fields(cls)}
    return {key: value for key, value in raw.items() if key in names}


@dataclass(frozen=True)
class MeshState:
    """Everything ``up`` decided: addresses, namespace, paths and the started processes.

    ``infra_started`` names the infrastructure parts this mesh started (and ``down`` stops);
    parts already running, or given by the environment, are left alone.
    """

    home: str
    namespace: str
    kafka_bootstrap: str
    redis_url: str
    spec_path: str
    registry_uri: str
    started_at: float
    infra_root: str = ""
    infra_started: list[str] = field(default_factory=list)
    # Set by `flywheel up --secure`: the folder of the CA, certificates and secrets
    # (flywheel.infra.secure); empty for a plain mesh.
    secure_dir: str = ""
    services: dict[str, ServiceState] = field(default_factory=dict)
    supervisor: SupervisorState | None = None
    format: int = STATE_FORMAT

    def address(self, service: str) -> str:
        return self.services[service].grpc_address

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> MeshState:
        if raw.get("format") != STATE_FORMAT:
            raise ValueError(f"unknown mesh state format {raw.get('format')!r}")
        services = {n: ServiceState.from_json(s) for n, s in raw.get("services", {}).items()}
        supervisor = raw.get("supervisor")
        plain = {k: v for k, v in _known(cls, raw).items() if k not in ("services", "supervisor")}
        return cls(**plain, services=services,
                   supervisor=SupervisorState.from_json(supervisor) if supervisor else None)


def save(path: Path, state: MeshState) -> None:
    atomic_write_json(path, state.to_json())


def load(path: Path) -> MeshState | None:
    """The recorded state, or None. A corrupt file raises ValueError: guessing which
    processes to stop would be worse than refusing."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as exc:
        raise ValueError(f"mesh state {path} is not valid JSON: {exc}") from exc
    try:
        return MeshState.from_json(raw)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"mesh state {path} is missing {exc}") from exc


@contextmanager
def locked(home: Path, *, wait: bool = True) -> Iterator[bool]:
    """Holds the mesh's lock (``<home>/.mesh.lock``) while the block runs: one writer of the
    state at a time. With ``wait=False`` it yields False at once when someone else holds it."""
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".mesh.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True


def secure_material(state: MeshState | None):
    """The secured mesh's material (`flywheel.infra.secure.SecureMaterial`), or None for a
    plain one."""
    if state is None or not state.secure_dir:
        return None
    from flywheel.infra.secure import SecureMaterial

    return SecureMaterial.existing(Path(state.secure_dir))


def client_security(state: MeshState | None):
    """The gRPC security (`GrpcSecuritySettings`) a command or the supervisor dials this
    mesh's services with: the operator's certificate and token on a secured mesh, None
    (plain text) otherwise."""
    material = secure_material(state)
    if material is None:
        return None
    from flywheel.common.settings import GrpcSecuritySettings
    from flywheel.infra.secure import OPERATOR

    return GrpcSecuritySettings(**{
        key.removeprefix("FLYWHEEL_GRPC_").lower(): value
        for key, value in material.grpc_env(OPERATOR).items()})
