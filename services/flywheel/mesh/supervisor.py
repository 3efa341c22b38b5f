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
from urllib.parse import urlsplit

from flywheel.common.grpc.client import health_status
from flywheel.infra import InfraError, LocalInfra, processes
from flywheel.infra.ports import resolve_ports
from flywheel.mesh import state as state_file
from flywheel.mesh.services import BY_NAME, SERVICES, ServiceDef, waves
from flywheel.mesh.settings import MeshSettings
from flywheel.mesh.state import MeshState, ServiceState, SupervisorState

Report = Callable[[str], None]
LOG_TAIL_LINES = 40
SERVING = "SERVING"
SUPERVISOR_MODULE = "flywheel.mesh.watchdog"


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
    restarts: int = 0

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
            "secured": _secured(s),
            "services": [service.to_json() for service in self.services],
            "supervisor": _supervisor_json(s),
        }


def _secured(state: MeshState | None) -> dict[str, str] | None:
    """What `flywheel up --secure` secured, for `flywheel status` (None: a plain mesh)."""
    if state is None or not state.secure_dir:
        return None
    return {
        "grpc": "mutual TLS + bearer tokens with roles",
        "kafka": "SASL_SSL, SCRAM-SHA-512 user per service",
        "redis": "TLS, ACL user per service",
        "material": state.secure_dir,
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
        A mesh of which some services still run is healed instead (``heal``). Last, the
        supervisor is started: it restarts any service that exits unexpectedly.
        """
        with state_file.locked(self.settings.home):
            previous = self.load_state()
            if previous is not None and any(service_running(s) for s in previous.services.values()):
                return self._heal(previous, report)
            if previous is not None:
                self._stop_supervisor(previous, report)
            state = self._start(previous, report)
            state = self._ensure_supervisor(state, report)
            state_file.save(self.settings.state_file, state)
            return state

    def _start(self, previous: MeshState | None, report: Report) -> MeshState:
        # Infra an earlier `up` started (and no `down` stopped) stays this mesh's to stop.
        inherited = previous.infra_started if previous else []
        ports = self._resolve_ports([s.name for s in SERVICES])
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

    def _heal(self, state: MeshState, report: Report) -> MeshState:
        """Starts only what is missing of a mesh that partly runs: dead local infrastructure
        on its old ports, then the dead services on theirs, so every address stays valid."""
        self._restore_infra(state, report)
        dead = [s for s in SERVICES
                if s.name not in state.services or not service_running(state.services[s.name])]
        if not dead:
            report(f"the mesh is already up (state in {self.settings.state_file})")
        fresh = self._resolve_ports([s.name for s in dead if s.name not in state.services])
        for wave in waves():
            todo = [s for s in wave if s in dead]
            for service in todo:
                recorded = state.services.get(service.name)
                if recorded is None:
                    state = self._spawn(state, service, fresh[service.name])
                else:
                    state = self.restart(state, service.name)
                state_file.save(self.settings.state_file, state)
            self._wait_for_wave(state, todo, report)
        if dead:
            report(f"started {', '.join(s.name for s in dead)}; the rest was already running")
        state = self._ensure_supervisor(state, report)
        state_file.save(self.settings.state_file, state)
        return state

    def restart(self, state: MeshState, name: str) -> MeshState:
        """Starts a service that exited again, on the ports it had, counting the restart.
        Does not wait for SERVING; the caller saves the state it returns."""
        old = state.services[name]
        # A process killed from outside may still hold its port for a moment.
        processes.wait_exited(old.pid, self.settings.stop_timeout_s)
        return self._spawn(state, BY_NAME[name], (old.grpc_port, old.metrics_port),
                           restarts=old.restarts + 1)

    def _restore_infra(self, state: MeshState, report: Report) -> None:
        if not state.infra_started:
            return
        infra = LocalInfra(state.infra_root or self.settings.infra_root)
        try:
            if infra.status(probe=False).running:
                return
            ports = {"kafka_port": _port_of(state.kafka_bootstrap),
                     "redis_port": _port_of(state.redis_url)}
            report("restarting the local Kafka and Redis on their ports")
            infra.up(timeout=self.settings.start_timeout_s, secure=bool(state.secure_dir),
                     **ports)
        except InfraError as exc:
            raise MeshError(f"infrastructure: {exc}", exc.detail) from None

    # -- the supervisor process ------------------------------------------------------------

    def _ensure_supervisor(self, state: MeshState, report: Report) -> MeshState:
        if state.supervisor is not None and processes.is_running(_supervisor_ref(state)):
            return state
        log = self.settings.logs_dir / "supervisor.log"
        policy = self.settings.restart_backoff
        argv = [
            self.settings.supervisor_python, "-m", SUPERVISOR_MODULE,
            "--python", self.settings.python, "--host", self.settings.host,
            "--backoff-initial", str(policy.initial_s), "--backoff-max", str(policy.max_s),
            "--stable-after", str(policy.stable_after_s),
        ]
        env = {**self.settings.environ, "FLYWHEEL_HOME": str(self.settings.home),
               "PYTHONUNBUFFERED": "1"}
        pid = processes.spawn_detached(argv, log, env)
        report(f"supervisor restarts services that exit (pid {pid}, log {log})")
        return replace(state, supervisor=SupervisorState(
            pid=pid, marker=f"-m {SUPERVISOR_MODULE}", log=str(log), started_at=time.time(),
        ))

    def _stop_supervisor(self, state: MeshState, report: Report) -> None:
        # First of all: a supervisor left running would restart what is being stopped.
        if state.supervisor is not None and processes.stop(
            _supervisor_ref(state), self.settings.stop_timeout_s
        ):
            report(f"stopped the supervisor (pid {state.supervisor.pid})")

    def _resolve_ports(self, names: list[str]) -> dict[str, tuple[int, int]]:
        requested: dict[str, int | None] = {}
        for service in (BY_NAME[name] for name in names):
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
        return {n: (chosen[f"{n}.grpc"], chosen[f"{n}.metrics"]) for n in names}

    def _start_infra(self, report: Report, inherited: list[str]) -> MeshState:
        infra = LocalInfra(self.settings.infra_root)
        try:
            before = infra.status(probe=False)
            already = {c.name for c in (before.kafka, before.redis) if c and c.running}
            report("starting Kafka and Redis (or using the given addresses)"
                   + (", secured" if self.settings.secure else ""))
            status = infra.up(timeout=self.settings.start_timeout_s, secure=self.settings.secure)
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
            secure_dir=str(infra.settings.secure_dir) if self.settings.secure else "",
        )

    def _ensure_topics(self, state: MeshState, report: Report) -> None:
        from flywheel.common.errors import FlywheelError
        from flywheel.mesh.topics import create_topics

        material = state_file.secure_material(state)
        if material is not None:
            from flywheel.common.kafka import security as kafka_security
            from flywheel.infra.secure import OPERATOR

            kafka_security.use(material.kafka_client(OPERATOR))
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
        material = state_file.secure_material(state)
        if material is not None:
            # Its own certificate, token, Kafka user and Redis user (flywheel.infra.secure).
            redis = urlsplit(state.redis_url)
            env.update(material.environ(service.name, redis.hostname, redis.port))
        return env

    def _spawn(self, state: MeshState, service: ServiceDef, ports: tuple[int, int],
               restarts: int = 0) -> MeshState:
        log = self.settings.logs_dir / f"{service.name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        what = f"restart {restarts}" if restarts else "starting"
        with log.open("a") as handle:
            handle.write(f"\n--- flywheel mesh: {what} of {service.module} at {time.ctime()} ---\n")
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
            restarts=restarts,
        )
        return replace(state, services={**state.services, service.name: started})

    def _wait_for_wave(self, state: MeshState, wave: list[ServiceDef], report: Report) -> None:
        if not wave:
            return
        deadline = time.monotonic() + self.settings.start_timeout_s
        pending = {service.name for service in wave}
        security = state_file.client_security(state)
        while pending:
            for name in sorted(pending):
                service = state.services[name]
                if not service_running(service):
                    raise MeshError(
                        f"{name} exited while starting (log: {service.log})", _tail(service)
                    )
                health = health_status(service.grpc_address, timeout_s=1.0, security=security)
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
                last = health_status(service.grpc_address, timeout_s=1.0, security=security)
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
        security = state_file.client_security(state)
        for service in SERVICES:
            recorded = state.services.get(service.name)
            if recorded is None:
                continue
            running = service_running(recorded)
            health = "STOPPED"
            if running:
                health = (health_status(recorded.grpc_address, timeout_s=1.0, security=security)
                          if probe else "UNKNOWN")
            found.append(ServiceStatus(
                name=service.name, address=recorded.grpc_address, pid=recorded.pid,
                running=running, health=health, log=recorded.log,
                metrics_port=recorded.metrics_port, restarts=recorded.restarts,
            ))
        return MeshStatus(state, found)

    def down(self, report: Report = lambda line: None) -> MeshState | None:
        """Stops the services (reverse start order), then the infra ``up`` started."""
        with state_file.locked(self.settings.home):
            state = self.load_state()
            if state is None:
                return None
            self._stop(state, report)
        return state

    def _stop(self, state: MeshState, report: Report) -> None:
        try:
            self._stop_supervisor(state, report)
        except OSError as exc:
            raise MeshError(f"could not stop the supervisor: {exc}") from None
        order = sorted(state.services.values(), key=lambda s: -BY_NAME[s.name].wave)
        failures = []
        for service in order:
            try:
                if service_running(service) and processes.stop(_ref(service), self.settings.stop_timeout_s):
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


def _supervisor_json(state: MeshState | None) -> dict[str, Any] | None:
    if state is None or state.supervisor is None:
        return None
    running = processes.is_running(_supervisor_ref(state))
    return {"pid": state.supervisor.pid, "running": running, "log": state.supervisor.log}


def _supervisor_ref(state: MeshState) -> processes.ProcessRef:
    assert state.supervisor is not None
    return processes.ProcessRef(state.supervisor.pid, state.supervisor.marker)


def _port_of(address: str) -> int:
    """The port of ``host:port`` or ``redis://host:port/0``."""
    return int(address.split("://")[-1].split("/")[0].rsplit(":", 1)[1])


def _ref(service: ServiceState) -> processes.ProcessRef:
    return processes.ProcessRef(service.pid, service.marker)


def service_running(service: ServiceState) -> bool:
    return processes.is_running(_ref(service))


def _tail(service: ServiceState) -> str:
    return processes.tail(Path(service.log), LOG_TAIL_LINES)
