"""Prometheus metrics over HTTP. Metric objects live beside the code that updates them."""

from __future__ import annotations

import socket

from prometheus_client import start_http_server


def start_metrics_server(host: str, port: int) -> int:
    """Serves /metrics on host:port (0 picks a free port); returns the bound port."""
    if port == 0:
        with socket.socket() as probe:
            probe.bind((host, 0))
            port = probe.getsockname()[1]
    start_http_server(port, addr=host)
    return port
