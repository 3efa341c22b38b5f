"""``python -m flywheel.mesh.watchdog``: the mesh's supervisor process.

``flywheel up`` starts it detached once the services serve (its pid is in ``mesh.json``);
``flywheel down`` stops it before anything else. It looks at the services twice a second and
starts again, on the same ports, any that exited without ``down`` asking, waiting longer
between the restarts of a service that keeps exiting (``flywheel.mesh.backoff``). Each
restart is logged to ``<home>/logs/supervisor.log`` and counted in the state, where
``flywheel status`` shows it.

It changes the state only under the mesh's lock and skips a round while ``up`` or ``down``
holds it; it exits when the state is gone (the mesh is down) or names another supervisor.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from flywheel.common.logging import configure_logging
from flywheel.common.settings import CommonSettings
from flywheel.mesh import state as state_file
from flywheel.mesh.backoff import BackoffPolicy, RestartBackoff
from flywheel.mesh.settings import MeshSettings
from flywheel.mesh.supervisor import Mesh, MeshError, service_running

log = logging.getLogger("flywheel.mesh.supervisor")
POLL_S = 0.5


class Watchdog:
    """One round at a time (``check``), so that the logic runs in a test without a loop."""

    def __init__(self, mesh: Mesh, policy: BackoffPolicy, *, pid: int | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.mesh = mesh
        self.policy = policy
        self.pid = os.getpid() if pid is None else pid
        self.clock = clock
        self.backoffs: dict[str, RestartBackoff] = {}

    def check(self) -> bool:
        """One look at the services; False once this supervisor has nothing left to watch."""
        with state_file.locked(self.mesh.settings.home, wait=False) as held:
            if not held:
                return True  # `up` or `down` is at work; look again next round
            state = self.mesh.load_state()
            if state is None or state.supervisor is None or state.supervisor.pid != self.pid:
                log.info("the mesh is down or has another supervisor; exiting")
                return False
            for name in list(state.services):
                state = self._check_service(state, name)
        return True

    def _check_service(self, state, name: str):
        service = state.services[name]
        backoff = self.backoffs.setdefault(name, RestartBackoff(self.policy))
        if service_running(service):
            backoff.restarted()
            return state
        now = self.clock()
        if not backoff.waiting:
            wait = backoff.exited(service.started_at, now)
            log.warning(
                f"{name} exited unexpectedly (pid {service.pid}, after "
                f"{now - service.started_at:.1f}s); restarting in {wait:.1f}s",
                extra={"target": name, "pid": service.pid, "restart_in_s": wait,
                       "exits_in_a_row": backoff.failures_in_a_row, "log_file": service.log},
            )
        if not backoff.due(now):
            return state
        try:
            state = self.mesh.restart(state, name)
        except OSError as exc:  # e.g. the program vanished: try again after the next wait
            backoff.exited(now, now)
            log.error(f"could not restart {name}: {exc}", extra={"target": name})
            return state
        state_file.save(self.mesh.settings.state_file, state)
        backoff.restarted()
        started = state.services[name]
        log.warning(f"restarted {name} (pid {started.pid}, restart {started.restarts})",
                    extra={"target": name, "pid": started.pid, "restarts": started.restarts})
        return state


def run(watchdog: Watchdog, stop: threading.Event, poll_s: float = POLL_S) -> None:
    while not stop.wait(poll_s):
        try:
            if not watchdog.check():
                return
        except MeshError as exc:  # a corrupt state file: say so, keep the services alive
            log.error(f"cannot read the mesh state: {exc}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flywheel.mesh.watchdog")
    parser.add_argument("--python", required=True, help="the interpreter that runs the services")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--backoff-initial", type=float, default=BackoffPolicy.initial_s)
    parser.add_argument("--backoff-max", type=float, default=BackoffPolicy.max_s)
    parser.add_argument("--stable-after", type=float, default=BackoffPolicy.stable_after_s)
    args = parser.parse_args(argv)
    settings = MeshSettings.from_env()
    common = CommonSettings()
    configure_logging("supervisor", common.log_level, common.log_json)
    policy = BackoffPolicy(initial_s=args.backoff_initial, max_s=args.backoff_max,
                           stable_after_s=args.stable_after)
    mesh = Mesh(replace(settings, python=args.python, host=args.host, restart_backoff=policy))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log.info(f"supervising the mesh in {settings.home} (pid {os.getpid()})")
    run(Watchdog(mesh, policy), stop)
    log.info("supervisor stopped")


if __name__ == "__main__":
    main()
