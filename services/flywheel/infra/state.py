"""The state file: what ``up`` started, so that ``down`` stops exactly that.

One JSON object at ``<infra root>/state.json``, written atomically (temp file + rename), so a
reader never sees half of it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from flywheel.common.files import atomic_write_json

STATE_FORMAT = 1


@dataclass(frozen=True)
class ComponentState:
    """One part of the infrastructure (``kafka`` or ``redis``) as it was started or given.

    ``source`` is ``local`` (a process started here, with ``pid`` and ``marker`` set),
    ``external`` (an address from the environment; nothing started) or ``testcontainers``.
    """

    name: str
    source: str
    address: str
    host: str | None = None
    port: int | None = None
    pid: int | None = None
    marker: str | None = None
    version: str | None = None
    log: str | None = None
    data: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def describe(self, what: str) -> str:
        """``Redis at redis://...``, or ``external Redis at ...`` when not started here."""
        prefix = "" if self.source == "local" else f"{self.source} "
        return f"{prefix}{what} at {self.address}"

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ComponentState:
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in raw.items() if key in known})


@dataclass(frozen=True)
class InfraState:
    """Everything recorded about one infra root."""

    root: str
    components: dict[str, ComponentState]
    started_at: float
    format: int = STATE_FORMAT

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "root": self.root,
            "started_at": self.started_at,
            "components": {name: asdict(c) for name, c in self.components.items()},
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> InfraState:
        if raw.get("format") != STATE_FORMAT:
            raise ValueError(f"unknown state format {raw.get('format')!r}")
        return cls(
            root=raw["root"],
            started_at=float(raw["started_at"]),
            components={
                name: ComponentState.from_json(c) for name, c in raw["components"].items()
            },
        )


def save_state(path: Path, state: InfraState) -> None:
    """Write ``state`` to ``path`` atomically."""
    atomic_write_json(path, state.to_json())


def load_state(path: Path) -> InfraState | None:
    """The state at ``path``, or None when there is none.

    A corrupt file raises ``ValueError``: guessing which processes to stop would be worse.
    """
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as exc:
        raise ValueError(f"state file {path} is not valid JSON: {exc}") from exc
    try:
        return InfraState.from_json(raw)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"state file {path} is missing {exc}") from exc
