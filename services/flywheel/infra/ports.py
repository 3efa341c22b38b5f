"""Choosing TCP ports on the loopback interface."""

from __future__ import annotations

import contextlib
import socket

LOOPBACK = "127.0.0.1"


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """Return ``count`` distinct ports the kernel reports free right now.

    All sockets stay bound until every port is chosen, so the ports are distinct; another
    process may still take one before it is used, which the caller notices at bind time.
    """
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(sock.getsockname()[1])
        return ports


def free_port(host: str = LOOPBACK) -> int:
    """One free port (see ``free_ports``)."""
    return free_ports(1, host)[0]


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """True when nothing listens on ``host:port`` and a server can bind it.

    Binds with SO_REUSEADDR, as the broker and Redis do: connections of a server that just
    died linger in TIME_WAIT on its port, which blocks a plain bind but not a server
    restarting there (``LocalInfra.up`` after a crash, on the same port).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def resolve_ports(requested: dict[str, int | None], host: str = LOOPBACK) -> dict[str, int]:
    """Fill the ``None`` entries of ``requested`` with free ports, distinct from the rest.

    A port given explicitly must be free, else ``ValueError`` names it.
    """
    taken = {name: port for name, port in requested.items() if port}
    for name, port in taken.items():
        if not 0 < port < 65536:
            raise ValueError(f"{name} port {port} is out of range 1-65535")
        if not port_is_free(port, host):
            raise ValueError(f"{name} port {port} on {host} is already in use")
    if len(set(taken.values())) != len(taken):
        raise ValueError(f"the same port is requested twice: {taken}")
    missing = [name for name, port in requested.items() if not port]
    chosen = iter(p for p in free_ports(len(missing) + len(taken), host) if p not in taken.values())
    return {name: taken[name] if name in taken else next(chosen) for name in requested}
