"""A ``redis-server`` process with append-only persistence under ``<root>/redis``."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from flywheel.infra import processes
from flywheel.infra.processes import ProcessRef
from flywheel.infra.secure import SecureMaterial
from flywheel.infra.settings import InfraSettings
from flywheel.infra.state import ComponentState


def server_version(redis_server: str) -> str | None:
    """The version ``redis-server --version`` reports (``v=7.0.15`` -> ``7.0.15``)."""
    try:
        out = subprocess.run(
            [redis_server, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"v=(\S+)", out)
    return match.group(1) if match else None


def start(settings: InfraSettings, redis_server: str, port: int,
          secure: SecureMaterial | None = None) -> ComponentState:
    """Start redis-server detached on ``settings.host:port``; does not wait for readiness.
    Secured (`secure`): TLS only on that port (no plain-text one) and the ACL users of
    `secure`, the default user off."""
    home = settings.root / "redis"
    data, log = home / "data", home / "redis.log"
    data.mkdir(parents=True, exist_ok=True)
    listen = (["--port", "0", "--tls-port", str(port), *secure.redis_args()]
              if secure else ["--port", str(port)])
    argv = [
        redis_server,
        "--bind", settings.host, *listen, "--dir", str(data),
        "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
        "--daemonize", "no",
        # Keep the command line as started: the state file finds the process by it.
        "--set-proc-title", "no",
    ]
    pid = processes.spawn_detached(argv, log)
    scheme = "rediss" if secure else "redis"
    return ComponentState(
        name="redis", source="local", address=f"{scheme}://{settings.host}:{port}/0",
        host=settings.host, port=port, pid=pid, marker=f"--dir {data}",
        version=server_version(redis_server), log=str(log), data=str(data),
        extra={"secure": secure is not None},
    )


def probe(url: str, timeout: float = 2.0) -> bool:
    """True when the server at ``url`` answers PING (not while it is loading its data)."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def wait_ready(state: ComponentState, timeout: float, url: str | None = None) -> None:
    """Block until the server answers PING (at `url`, the address with its credentials,
    when given); fail with its log tail otherwise."""
    ref = ProcessRef(state.pid, state.marker) if state.pid and state.marker else None
    logs = [Path(state.log)] if state.log else []
    processes.wait_for(
        state.describe("Redis"), lambda: probe(url or state.address), ref, logs, timeout
    )
