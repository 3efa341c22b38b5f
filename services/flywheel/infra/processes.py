"""Detached server processes: start, identify, stop, read their logs.

A process started here runs in its own session, so it outlives the command that started it
and a Ctrl-C in that terminal does not reach it. It is identified later by its pid plus a
marker that must appear in its command line, so a recycled pid is never killed by mistake.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from flywheel.infra.errors import InfraError, MissingBinaryError


@dataclass(frozen=True)
class ProcessRef:
    """How to find a started process again: its pid and a substring of its command line."""

    pid: int
    marker: str


def spawn_detached(
    argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None
) -> int:
    """Start ``argv`` in a new session with stdout and stderr appended to ``log_path``.

    Returns the pid. ``posix_spawn`` leaves no ``Popen`` object behind, so nothing warns
    about a child still running when the starting process exits first, which is the point.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(log_path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    return os.posix_spawn(
        argv[0], list(argv), dict(env if env is not None else os.environ),
        file_actions=actions, setsid=True,
    )


def _reap(pid: int) -> None:
    """Collect the exit status of ``pid`` if it is our own child, so it leaves no zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def command_line(pid: int) -> str | None:
    """The command line of a live process, or None when there is no such live process."""
    _reap(pid)
    proc = Path(f"/proc/{pid}")
    if proc.is_dir():
        try:
            stat = (proc / "stat").read_text()
            # The state letter follows the parenthesised command name; Z is a dead child.
            if stat[stat.rindex(")") + 2] in "ZX":
                return None
            return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            return None
    try:  # no procfs (macOS): ask ps
        out = subprocess.run(
            ["ps", "-o", "stat=,command=", "-p", str(pid)],
            capture_output=True, text=True, timeout=5, check=False,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    if not out or out.startswith("Z"):
        return None
    return out.split(None, 1)[1] if " " in out else ""


def is_running(ref: ProcessRef, exec_wait_s: float = 2.0) -> bool:
    """True when ``ref.pid`` is alive and still the process that was started.

    Right after a spawn the kernel shows an empty command line for a moment, while exec
    completes: that is waited out (up to ``exec_wait_s``), so a process just started is never
    taken for one that already exited.
    """
    deadline = time.monotonic() + exec_wait_s
    cmdline = command_line(ref.pid)
    while cmdline == "" and time.monotonic() < deadline:
        time.sleep(0.02)
        cmdline = command_line(ref.pid)
    return cmdline is not None and ref.marker in cmdline


def _has_live_threads(pid: int) -> bool:
    """True while any thread of ``pid`` still runs. After SIGKILL a JVM's main thread shows as
    a zombie while its other threads are still exiting and its sockets are still open."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for tid in tids:
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        if stat[stat.rindex(")") + 2] not in "ZX":
            return True
    return False


def wait_exited(pid: int, timeout: float = 10.0) -> bool:
    """Waits until every thread of a dead (or dying) ``pid`` has exited; False on timeout."""
    deadline = time.monotonic() + timeout
    while _has_live_threads(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def stop(ref: ProcessRef, timeout: float = 30.0) -> bool:
    """Stop the process with SIGTERM, then SIGKILL after ``timeout`` seconds.

    Signals go to the process group the process leads (it was started in its own session),
    so any helper it forked goes too. Returns False when it was not running.
    """
    if not is_running(ref):
        return False
    _signal(ref.pid, signal.SIGTERM)
    if not _wait_gone(ref, timeout):
        _signal(ref.pid, signal.SIGKILL)
        if not _wait_gone(ref, 10.0):
            raise OSError(f"process {ref.pid} survived SIGKILL")
    return True


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait_gone(ref: ProcessRef, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while is_running(ref):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return wait_exited(ref.pid, max(deadline - time.monotonic(), 1.0))


def tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a text file, or a note that it is missing."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            text = handle.read().decode(errors="replace")
    except OSError:
        return f"({path} does not exist)"
    return "\n".join(text.splitlines()[-lines:])


def resolve_programs(programs: Mapping[str, str]) -> dict[str, str]:
    """Map each role (``java``...) to the absolute path of its program, or raise naming all
    that are missing at once, so one run of the command tells everything to install."""
    found = {role: shutil.which(program) for role, program in programs.items()}
    missing = {role: programs[role] for role, path in found.items() if path is None}
    if missing:
        raise MissingBinaryError(missing)
    return {role: str(path) for role, path in found.items()}


def wait_for(
    what: str,
    check: Callable[[], bool],
    ref: ProcessRef | None,
    logs: Sequence[Path],
    timeout: float,
) -> None:
    """Poll ``check()`` until it returns True, until ``timeout`` seconds have passed.

    Fails early when the process ``ref`` has exited; every failure carries the tail of
    ``logs`` as its detail.
    """
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        if check():
            return
        if ref is not None and not is_running(ref):
            problem = f"{what} exited during start-up"
            break
        if time.monotonic() >= deadline:
            problem = f"{what} was not ready within {timeout:.0f}s"
            break
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
    detail = "\n".join(f"--- last lines of {log}\n{tail(log)}" for log in logs)
    if logs:
        problem += f" (logs: {', '.join(str(log) for log in logs)})"
    raise InfraError(problem, detail)
