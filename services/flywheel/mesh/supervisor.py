"""``Mesh``: bring the five services up and down as detached local processes.

    mesh = Mesh(MeshSettings.from_env())
    state = mesh.up(report=print)    # infra, topics, services; returns when all are SERVING
    mesh.status()                    # addresses, pids, health
    mesh.down()                      # stops what up() started, infra included

Processes are started and stopped with ``flywheel.infra.processes`` (own session, pid plus a
command-line marker, SIGTERM then SIGKILL to the process group), like the broker and Redis.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from flywheel.common.grpc.client import health_status
from flywheel.infra import InfraError, LocalInfra, processes
from flywheel.infra.ports import resolve_ports
from flywheel.mesh import state as state_file
from flywheel.mesh.services import BY_NAME, SERVICES, ServiceDef, waves
from flywheel.mesh.settings import MeshSettings
from flywheel.mesh.state import MeshState, ServiceState

Report = Callable[[str], None]
LOG_TAIL_LINES = 40
SERVING = "SERVING"


class MeshError(Exception):
    """A failure of up/down/status, with the detail (a log tail) to show under it."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    address: str
    pid: int | None
    running: bool
    health: str
    log: str
    metrics_port: int | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MeshStatus:
    state: MeshState | None
    services: list[ServiceStatus]

    @property
    def serving(self) -> bool:
        return bool(self.services) and all(s.health == SERVING for s in self.services)

    def to_json(self) -> dict[str, Any]:
        s = self.state
        return {
            "up": s is not None,
            "serving": self.serving,
            "home": s.home if s else None,
            "namespace": s.namespace if s else None,
            "kafka_bootstrap": s.kafka_bootstrap if s else None,
            "redis_url": s.redis_url if s else None,
            "registry_uri": s.registry_uri if s else None,
            "spec_path": s.spec_path if s else None,
            "services": [service.to_json() for service in self.services],
        }


class Mesh:
    def __init__(self, settings: MeshSettings) -> None:
        self.settings = settings

    # -- up ------------------------------------------------------------------------------

    def up(self, report: Report = lambda line: None) -> MeshState:
        """Start infra, topics and services; return once every service answers SERVING.

        Inference may stay NOT_SERVING only while the registry has no champion model: it
        has nothing to serve until one is registered (``flywheel models register`` or the
        demo's seed model). On any failure, everything this call started is stopped again.
        """
        previous = self.load_state()
        if previous is not None:
            alive = [n for n, s in previous.services.items() if _is_running(s)]
            if alive and len(alive) == len(SERVICES):
                report(f"the mesh is already up (state in {self.settings.state_file})")
                return previous
            if alive:
                raise MeshError(
                    f"part of a mesh is still running ({', '.join(sorted(alive))}); "
                    "run `flywheel down` first"
                )
        # Infra an earlier `up` started (and no `down` stopped) stays this mesh's to stop.
        inherited = previous.infra_started if previous else []
        ports = self._resolve_ports()
        state = self._start_infra(report, inherited)
        state_file.save(self.settings.state_file, state)
        try:
            self._ensure_topics(state, report)
            for wave in waves():
                for service in wave:
                    state = self._spawn(state, service, ports[service.name])
                    state_file.save(self.settings.state_file, state)
                self._wait_for_wave(state, wave, report)
        except BaseException:
            report("start failed; stopping what was started")
            self._stop(state, report)
            raise
        return state

    def _resolve_ports(self) -> dict[str, tuple[int, int]]:
        requested: dict[str, int | None] = {}
        for service in SERVICES:
            grpc_port, metrics_port = self.settings.ports[service.name]
            requested[f"{service.name}.grpc"] = grpc_port
            requested[f"{service.name}.metrics"] = metrics_port
        try:
            chosen = resolve_ports(requested, self.settings.host)
        except ValueError as exc:
            raise MeshError(
                f"{exc}: set FLYWHEEL_<SERVICE>_GRPC_PORT / _METRICS_PORT, "
                "or run `flywheel up --free-ports`"
            ) from None
        return {s.name: (chosen[f"{s.name}.grpc"], chosen[f"{s.name}.metrics"]) for s in SERVICES}

    def _start_infra(self, report: Report, inherited: list[str]) -> MeshState:
        infra = LocalInfra(self.settings.infra_root)
        try:
            before = infra.status(probe=False)
            already = {c.name for c in (before.kafka, before.redis) if c and c.running}
            report("starting Kafka and Redis (or using the given addresses)")
            status = infra.up(timeout=self.settings.start_timeout_s)
        except InfraError as exc:
            raise MeshError(f"infrastructure: {exc}", exc.detail) from None
        started = [
            c.name for c in (status.kafka, status.redis)
            if c is not None and c.source == "local" and (c.name not in already or c.name in inherited)
        ]
        for component in (status.kafka, status.redis):
            report(f"{component.name:<9} {component.address} ({component.source})")
        return MeshState(
            home=str(self.settings.home),
            namespace=self.settings.namespace,
            kafka_bootstrap=status.kafka_bootstrap,
            redis_url=status.redis_url,
            spec_path=str(self.settings.spec_path),
            registry_uri=self.settings.registry_uri,
            started_at=time.time(),
            infra_root=str(self.settings.infra_root),
            infra_started=started,
        )

    def _ensure_topics(self, state: MeshState, report: Report) -> None:
        from flywheel.common.errors import FlywheelError
        from flywheel.mesh.topics import create_topics

        try:
            topics = create_topics(state.kafka_bootstrap, state.namespace)
        except FlywheelError as exc:
            raise MeshError(f"creating the topics: {exc}") from None
        report(f"topics    {len(topics)} ready (namespace {state.namespace or '(none)'})")

    def service_env(self, state: MeshState, service: ServiceDef, ports: tuple[int, int]) -> dict[str, str]:
        """The environment of one service: the caller's, plus the mesh's addresses."""
        env = dict(self.settings.environ)
        env.update(
            FLYWHEEL_HOME=state.home,
            FLYWHEEL_NAMESPACE=state.namespace,
            FLYWHEEL_KAFKA_BOOTSTRAP=state.kafka_bootstrap,
            FLYWHEEL_REDIS_URL=state.redis_url,
            FLYWHEEL_SPEC_PATH=state.spec_path,
            FLYWHEEL_REGISTRY_URI=state.registry_uri,
            PYTHONUNBUFFERED="1",
        )
        env[f"{service.env_prefix}GRPC_HOST"] = self.settings.host
        env[service.grpc_port_env] = str(ports[0])
        env[service.metrics_port_env] = str(ports[1])
        for suffix, target in service.links.items():
            env[f"{service.env_prefix}{suffix}"] = state.address(target)
        for suffix, folder in service.data_dirs.items():
            env.setdefault(f"{service.env_prefix}{suffix}", str(Path(state.home) / folder))
        return env

    def _spawn(self, state: MeshState, service: ServiceDef, ports: tuple[int, int]) -> MeshState:
        log = self.settings.logs_dir / f"{service.name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as handle:
            handle.write(f"\n--- flywheel up: starting {service.module} at {time.ctime()} ---\n")
        argv = [self.settings.python, "-m", service.module]
        pid = processes.spawn_detached(argv, log, self.service_env(state, service, ports))
        started = ServiceState(
            name=service.name,
            pid=pid,
            marker=f"-m {service.module}",
            grpc_address=f"{self.settings.host}:{ports[0]}",
            grpc_port=ports[0],
            metrics_port=ports[1],
            log=str(log),
            started_at=time.time(),
        )
        return replace(state, services={**state.services, service.name: started})

    def _wait_for_wave(self, state: MeshState, wave: list[ServiceDef], report: Report) -> None:
        deadline = time.monotonic() + self.settings.start_timeout_s
        pending = {service.name for service in wave}
        while pending:
            for name in sorted(pending):
                service = state.services[name]
                if not _is_running(service):
                    raise MeshError(
                        f"{name} exited while starting (log: {service.log})", _tail(service)
                    )
                health = health_status(service.grpc_address, timeout_s=1.0)
                elapsed = time.time() - service.started_at
                if health == SERVING:
                    pending.discard(name)
                    report(f"{name:<9} {SERVING:<11} {service.grpc_address} "
                           f"(pid {service.pid}, {elapsed:.1f}s)")
                elif name == "inference" and health == "NOT_SERVING" and not self._has_champion(state):
                    pending.discard(name)
                    report(f"{name:<9} NOT_SERVING {service.grpc_address} (pid {service.pid}): "
                           "no model in the registry yet; it serves once one is promoted "
                           "(`flywheel models register ... --promote`, or `flywheel demo`)")
            if pending and time.monotonic() > deadline:
                name = sorted(pending)[0]
                service = state.services[name]
                last = health_status(service.grpc_address, timeout_s=1.0)
                raise MeshError(
                    f"{name} not SERVING after {self.settings.start_timeout_s:.0f}s "
                    f"(last status {last}; log: {service.log})",
                    _tail(service),
                )
            if pending:
                time.sleep(0.25)

    def _has_champion(self, state: MeshState) -> bool:
        """True when some model of the registry has a champion (then inference must serve)."""
        from flywheel.common.registry import CHAMPION, ModelRegistry

        if "://" in state.registry_uri:
            return True  # not a directory we can look into: insist on SERVING
        registry = ModelRegistry(state.registry_uri)
        return any(CHAMPION in registry.aliases(name) for name in registry.model_names())

    # -- status / down -------------------------------------------------------------------

    def load_state(self) -> MeshState | None:
        try:
            return state_file.load(self.settings.state_file)
        except ValueError as exc:
            raise MeshError(str(exc)) from None

    def status(self, probe: bool = True) -> MeshStatus:
        state = self.load_state()
        if state is None:
            return MeshStatus(None, [])
        found = []
        for service in SERVICES:
            recorded = state.services.get(service.name)
            if recorded is None:
                continue
            running = _is_running(recorded)
            health = "STOPPED"
            if running:
                health = health_status(recorded.grpc_address, timeout_s=1.0) if probe else "UNKNOWN"
            found.append(ServiceStatus(
                name=service.name, address=recorded.grpc_address, pid=recorded.pid,
                running=running, health=health, log=recorded.log,
                metrics_port=recorded.metrics_port,
            ))
        return MeshStatus(state, found)

    def down(self, report: Report = lambda line: None) -> MeshState | None:
        """Stops the services (reverse start order), then the infra ``up`` started."""
        state = self.load_state()
        if state is None:
            return None
        self._stop(state, report)
        return state

    def _stop(self, state: MeshState, report: Report) -> None:
        order = sorted(state.services.values(), key=lambda s: -BY_NAME[s.name].wave)
        failures = []
        for service in order:
            try:
                if _is_running(service) and processes.stop(_ref(service), self.settings.stop_timeout_s):
                    report(f"stopped {service.name} (pid {service.pid})")
            except OSError as exc:
                failures.append(f"{service.name}: {exc}")
        if state.infra_started:
            try:
                LocalInfra(state.infra_root or self.settings.infra_root).down()
                report(f"stopped {' and '.join(state.infra_started)}")
            except InfraError as exc:
                failures.append(f"infra: {exc}")
        if failures:
            raise MeshError("could not stop everything", "\n".join(failures))
        self.settings.state_file.unlink(missing_ok=True)


def _ref(service: ServiceState) -> processes.ProcessRef:
    return processes.ProcessRef(service.pid, service.marker)


def _is_running(service: ServiceState) -> bool:
    return processes.is_running(_ref(service))


def _tail(service: ServiceState) -> str:
    return processes.tail(Path(service.log), LOG_TAIL_LINES)
