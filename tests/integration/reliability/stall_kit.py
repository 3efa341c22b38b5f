"""Helpers of the stalled-dependency tests: a redis-server of the test's own that can be
SIGSTOPped (never the session's), a service process that can be SIGSTOPped, and a gRPC call
timed with the status it ended with."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from flywheel.infra import processes, redis_server
from flywheel.infra.ports import free_port
from flywheel.infra.processes import ProcessRef
from flywheel.infra.settings import InfraSettings
from flywheel.infra.state import ComponentState


@contextlib.contextmanager
def stopped(pid: int) -> Iterator[None]:
    """SIGSTOP `pid` for the block; SIGCONT always, also when the block failed."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


class PrivateRedis:
    """A redis-server on a free port with its data under `root`, started as `flywheel infra`
    starts one; the environment's external Redis is ignored on purpose."""

    def __init__(self, root: Path) -> None:
        self._settings = InfraSettings.from_env(
            root=root, external_kafka_bootstrap=None, external_redis_url=None)
        self._state: ComponentState | None = None

    def up(self) -> None:
        program = processes.resolve_programs({"redis": self._settings.redis_server})["redis"]
        self._state = redis_server.start(self._settings, program, free_port())
        redis_server.wait_ready(self._state, timeout=30.0)

    @property
    def url(self) -> str:
        assert self._state is not None
        return self._state.address

    @property
    def address(self) -> str:
        """host:port, as the services name it."""
        assert self._state is not None
        return f"{self._state.host}:{self._state.port}"

    def stalled(self) -> contextlib.AbstractContextManager[None]:
        assert self._state is not None and self._state.pid
        return stopped(self._state.pid)

    def down(self) -> None:
        if self._state is None or not self._state.pid:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._state.pid, signal.SIGCONT)
        processes.stop(ProcessRef(self._state.pid, self._state.marker or ""), timeout=10.0)


def start_service(module: str, env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """`python -m <module>` with `env` over this environment, its output in `log_path`."""
    log = open(log_path, "ab")  # noqa: SIM115 - kept open for the child's life
    return subprocess.Popen([sys.executable, "-m", module], env={**os.environ, **env},
                            stdout=log, stderr=subprocess.STDOUT)


def stop_service(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGCONT)  # in case a failing test left it stopped
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@dataclass(frozen=True)
class Outcome:
    """How one call ended: status name, its details, seconds it took."""

    code: str
    details: str
    seconds: float

    def summary(self) -> dict[str, object]:
        return {"code": self.code, "s": round(self.seconds, 3), "details": self.details}


async def timed(call: Awaitable) -> Outcome:
    started = time.monotonic()
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return Outcome(error.code().name, error.details() or "", time.monotonic() - started)
    return Outcome("OK", "", time.monotonic() - started)
