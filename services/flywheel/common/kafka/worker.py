"""The thread a Kafka worker polls in, and what health needs to know of it."""

from __future__ import annotations

import threading


class WorkerThread:
    """Subclasses implement `_run` (loop until `_stop` is set; record a fatal error in
    `failed`; set `assigned` once partitions are theirs)."""

    stop_timeout_s = 10.0

    def __init__(self, name: str) -> None:
        self._name = name
        self.assigned = threading.Event()
        self.failed: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float | None = None) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(self.stop_timeout_s if timeout_s is None else timeout_s)

    @property
    def healthy(self) -> bool:
        return self.assigned.is_set() and self.failed is None and not self._stop.is_set()
