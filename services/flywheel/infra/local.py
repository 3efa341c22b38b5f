"""``LocalInfra``: bring a real Kafka broker and Redis server up and down on this machine.

    from flywheel.infra import LocalInfra

    infra = LocalInfra("/tmp/flywheel-infra")       # or LocalInfra() for ./.flywheel/infra
    status = infra.up()                             # waits until both are really ready
    status.kafka_bootstrap, status.redis_url        # '127.0.0.1:40123', 'redis://127.0.0.1:40125/0'
    infra.down()                                    # stops exactly what up() started

Each part whose address is given (``FLYWHEEL_KAFKA_BOOTSTRAP`` / ``FLYWHEEL_REDIS_URL``, or the
``external_*`` settings) is not started: its address is reported with source ``external``.
"""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from flywheel.infra import kafka_broker, processes, redis_server
from flywheel.infra.errors import InfraError
from flywheel.infra.ports import resolve_ports
from flywheel.infra.processes import ProcessRef
from flywheel.infra.secure import OPERATOR, SecureMaterial
from flywheel.infra.settings import InfraSettings
from flywheel.infra.state import ComponentState, InfraState, load_state, save_state

COMPONENTS = ("kafka", "redis")


@dataclass(frozen=True)
class ComponentStatus:
    """One part as it stands now. ``running``: its process is alive (local) or it answered
    a probe (external); ``ready``: it answered a probe (metadata request / PING)."""

    name: str
    source: str
    address: str
    running: bool
    ready: bool
    pid: int | None = None
    port: int | None = None
    version: str | None = None
    log: str | None = None
    secure: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class InfraStatus:
    """The addresses and health of the infrastructure of one root."""

    root: Path
    kafka: ComponentStatus | None
    redis: ComponentStatus | None

    @property
    def kafka_bootstrap(self) -> str:
        """``host:port`` of the broker; InfraError when Kafka is neither started nor given."""
        return self._component("kafka").address

    @property
    def redis_url(self) -> str:
        """``redis://host:port/0``; InfraError when Redis is neither started nor given."""
        return self._component("redis").address

    @property
    def kafka_version(self) -> str | None:
        return self.kafka.version if self.kafka else None

    @property
    def running(self) -> bool:
        """True when both parts are there and running."""
        return all(c is not None and c.running for c in (self.kafka, self.redis))

    @property
    def pids(self) -> dict[str, int]:
        return {c.name: c.pid for c in (self.kafka, self.redis) if c is not None and c.pid}

    def _component(self, name: str) -> ComponentStatus:
        component = getattr(self, name)
        if component is None:
            raise InfraError(f"{name} is not up under {self.root}: run `flywheel infra up`")
        return component

    def to_json(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "running": self.running,
            "kafka_bootstrap": self.kafka.address if self.kafka else None,
            "redis_url": self.redis.address if self.redis else None,
            "kafka_version": self.kafka_version,
            "pids": self.pids,
            "kafka": self.kafka.to_json() if self.kafka else None,
            "redis": self.redis.to_json() if self.redis else None,
        }


class LocalInfra:
    """Start, stop and inspect the local Kafka broker and Redis server of one root folder.

    ``root`` is the folder for data, logs and ``state.json`` (default ``settings.root``:
    ``$FLYWHEEL_HOME/infra`` or ``./.flywheel/infra``). Safe to use from several processes:
    ``up`` and ``down`` hold a lock on the root.
    """

    def __init__(self, root: str | Path | None = None, *, settings: InfraSettings | None = None):
        settings = settings or InfraSettings.from_env()
        if root is not None:
            settings = replace(settings, root=Path(root).resolve())
        self.settings = settings

    @property
    def root(self) -> Path:
        return self.settings.root

    def fetch(self) -> str:
        """Fetch the broker jars into the cache unless already there; return the version."""
        return kafka_broker.fetch_jars(self.settings)

    def up(
        self, *, kafka_port: int | None = None, redis_port: int | None = None,
        timeout: float | None = None, secure: bool = False,
    ) -> InfraStatus:
        """Start what is not running yet and wait until both parts answer.

        Ports default to free ones. Parts already running are kept (asking for another
        port for them, or for another security, is an error). On failure, whatever this call
        started is stopped again. ``secure``: Kafka on a SASL_SSL listener with SCRAM users
        and Redis on TLS with ACL users, from the material in ``settings.secure_dir``
        (made there the first time).
        """
        timeout = self.settings.start_timeout_s if timeout is None else timeout
        material = SecureMaterial.ensure(self.settings.secure_dir) if secure else None
        with self._locked():
            previous = self._load()
            current = dict(previous.components) if previous else {}
            wanted = {"kafka": kafka_port, "redis": redis_port}
            to_start = []
            for name in COMPONENTS:
                external = self._external(name)
                kept = current.get(name)
                kept_alive = kept is not None and kept.source == "local" and _alive(kept)
                if external is not None:
                    if kept_alive:  # else the process would drop out of the state file
                        raise InfraError(
                            f"{name} runs locally (pid {kept.pid}) under {self.root} but "
                            f"{external.address} is given as external: run `flywheel infra down`"
                        )
                    current[name] = external
                elif kept_alive:
                    if bool(kept.extra.get("secure")) != secure:
                        raise InfraError(
                            f"{name} already runs {'with' if not secure else 'without'} "
                            f"security under {self.root}; run `flywheel infra down` first"
                        )
                    if wanted[name] and wanted[name] != kept.port:
                        raise InfraError(
                            f"{name} already runs on port {kept.port} under {self.root}; "
                            f"run `flywheel infra down` first to move it to {wanted[name]}"
                        )
                else:
                    dead = current.pop(name, None)
                    if dead is not None and dead.source == "local" and dead.pid:
                        # Killed from outside: its threads may still hold the ports.
                        processes.wait_exited(dead.pid)
                    to_start.append(name)
            started = self._start(to_start, wanted, current, material)
            state = InfraState(str(self.root), current, time.time())
            save_state(self.settings.state_file, state)
            try:
                kafka_broker.wait_ready(current["kafka"], timeout,
                                        self._kafka_client(current["kafka"]))
                redis_server.wait_ready(current["redis"], timeout,
                                        self._redis_probe_url(current["redis"]))
            except BaseException:
                for name in started:
                    self._stop_quietly(current.pop(name))
                save_state(self.settings.state_file, replace(state, components=current))
                raise
        return self.status()

    def _start(
        self, names: list[str], wanted: dict[str, int | None], into: dict[str, ComponentState],
        material: SecureMaterial | None = None,
    ) -> list[str]:
        if not names:
            return []
        programs = {}
        if "kafka" in names:
            programs["java"] = self.settings.java
        if "redis" in names:
            programs["redis-server"] = self.settings.redis_server
        if "kafka" in names and kafka_broker.jars_version(self.settings.jars_dir) is None:
            programs["mvn"] = self.settings.mvn
        paths = processes.resolve_programs(programs)
        requested = {"redis": wanted["redis"]} if "redis" in names else {}
        if "kafka" in names:
            requested.update(kafka=wanted["kafka"], controller=None)
        try:
            ports = resolve_ports(requested, self.settings.host)
        except ValueError as exc:
            raise InfraError(str(exc)) from None
        started: list[str] = []
        try:
            if "redis" in names:  # first: it is ready while the JVM still boots
                into["redis"] = redis_server.start(
                    self.settings, paths["redis-server"], ports["redis"], material
                )
                started.append("redis")
            if "kafka" in names:
                into["kafka"] = kafka_broker.start(
                    self.settings, paths["java"], ports["kafka"], ports["controller"], material
                )
                started.append("kafka")
        except BaseException:
            for name in started:
                self._stop_quietly(into.pop(name))
            raise
        return started

    def down(self) -> InfraStatus:
        """Stop every process ``up`` started under this root (SIGTERM, then SIGKILL).

        External parts are left alone. Returns the status as it was just before stopping.
        """
        with self._locked():
            before = self.status(probe=False)
            state = self._load()
            if state is None:
                return before
            for component in state.components.values():
                if component.source == "local":
                    try:
                        processes.stop(_ref(component), self.settings.stop_timeout_s)
                    except OSError as exc:
                        raise InfraError(f"could not stop {component.name}: {exc}") from exc
            self.settings.state_file.unlink(missing_ok=True)
        return before

    def status(self, *, probe: bool = True) -> InfraStatus:
        """What runs under this root now; ``probe`` also asks each part whether it answers."""
        state = self._load()
        components = dict(state.components) if state else {}
        for name in COMPONENTS:
            external = self._external(name)
            if external is not None:
                components[name] = external
        found = {name: self._describe(c, probe) for name, c in components.items()}
        return InfraStatus(self.root, found.get("kafka"), found.get("redis"))

    def __enter__(self) -> InfraStatus:
        return self.up()

    def __exit__(self, *exc_info: object) -> None:
        self.down()

    @property
    def material(self) -> SecureMaterial | None:
        """The secured infrastructure's material, when it was made."""
        return SecureMaterial.existing(self.settings.secure_dir)

    def _kafka_client(self, component: ComponentState) -> dict[str, str] | None:
        """The properties a probe reaches this broker with (None: the process's own)."""
        material = self.material if component.extra.get("secure") else None
        return material.kafka_client(OPERATOR) if material else None

    def _redis_probe_url(self, component: ComponentState) -> str:
        material = self.material if component.extra.get("secure") else None
        if material is None or component.host is None or component.port is None:
            return component.address
        return material.redis_url(component.host, component.port, OPERATOR)

    def _probe(self, component: ComponentState) -> bool:
        if component.name == "kafka":
            return kafka_broker.probe(component.address, client=self._kafka_client(component))
        return redis_server.probe(self._redis_probe_url(component))

    def _describe(self, component: ComponentState, probe: bool) -> ComponentStatus:
        alive = _alive(component) if component.source == "local" else None
        ready = bool(probe and alive is not False and self._probe(component))
        return ComponentStatus(
            name=component.name, source=component.source, address=component.address,
            running=ready if alive is None else alive, ready=ready,
            pid=component.pid, port=component.port, version=component.version, log=component.log,
            secure=bool(component.extra.get("secure")),
        )

    def _external(self, name: str) -> ComponentState | None:
        address = {
            "kafka": self.settings.external_kafka_bootstrap,
            "redis": self.settings.external_redis_url,
        }[name]
        return ComponentState(name=name, source="external", address=address) if address else None

    def _load(self) -> InfraState | None:
        try:
            return load_state(self.settings.state_file)
        except ValueError as exc:
            raise InfraError(str(exc)) from None

    def _stop_quietly(self, component: ComponentState) -> None:
        with contextlib.suppress(OSError):
            processes.stop(_ref(component), self.settings.stop_timeout_s)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield


def _ref(component: ComponentState) -> ProcessRef:
    return ProcessRef(component.pid or 0, component.marker or "")


def _alive(component: ComponentState) -> bool:
    return bool(component.pid and component.marker) and processes.is_running(_ref(component))
