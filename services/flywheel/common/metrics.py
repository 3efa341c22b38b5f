"""Prometheus metrics over HTTP. Metric objects live beside the code that updates them."""

from __future__ import annotations

import socket
from collections.abc import Callable, Hashable
from typing import Any

from prometheus_client import start_http_server


def start_metrics_server(host: str, port: int) -> int:
    """Serves /metrics on host:port (0 picks a free port); returns the bound port."""
    if port == 0:
        with socket.socket() as probe:
            probe.bind((host, 0))
            port = probe.getsockname()[1]
    start_http_server(port, addr=host)
    return port


class ChildrenByKey:
    """The children of a labelled metric, one per key, for hot paths: `labels()` builds its
    label strings and takes a lock on every call; here a child costs one dict lookup after
    the first. `labels_of(*key)` gives the label values of a key (e.g. an enum's name)."""

    def __init__(self, metric: Any, labels_of: Callable[..., tuple[str, ...]]) -> None:
        self._metric = metric
        self._labels_of = labels_of
        self._children: dict[tuple[Hashable, ...], Any] = {}

    def __call__(self, *key: Hashable) -> Any:
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._metric.labels(*self._labels_of(*key))
        return child
