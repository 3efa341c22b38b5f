"""``.flywheel/mesh.json``: what ``flywheel up`` started and where it listens.

``down`` stops exactly the processes named here; ``status`` and ``demo`` read the addresses.
Written atomically after every process start, so an interrupted ``up`` can still be undone.
"""

from __future__ import annotations

import json
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

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ServiceState:
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in raw.items() if key in known})


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
    services: dict[str, ServiceState] = field(default_factory=dict)
    format: int = STATE_FORMAT

    def address(self, service: str) -> str:
        return self.services[service].grpc_address

    def to_json(self) -> dict[str, Any]:
        raw = asdict(self)
        raw["services"] = {name: asdict(s) for name, s in self.services.items()}
        return raw

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> MeshState:
        if raw.get("format") != STATE_FORMAT:
            raise ValueError(f"unknown mesh state format {raw.get('format')!r}")
        known = {f.name for f in fields(cls)} - {"services"}
        services = {n: ServiceState.from_json(s) for n, s in raw.get("services", {}).items()}
        return cls(**{k: v for k, v in raw.items() if k in known}, services=services)


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
