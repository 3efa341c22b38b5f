"""Dynamic batching: concurrent requests for one model version share one session run.

A request queues its feeds (each input with the rows on its first dimension) and awaits a
future. The first request of an empty queue waits at most `max_queue_delay_us` for company;
requests that queue while a run is in flight are taken by the next run as soon as it can
start. A batch stacks requests of the same input shapes and dtypes, up to `max_batch_size`
rows (a single request larger than that runs alone), runs once in a worker thread, and is
split back by row offsets, so each caller gets exactly the rows it sent.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np
from prometheus_client import Histogram

log = logging.getLogger("flywheel.inference.batcher")

BATCH_SIZE = Histogram(
    "flywheel_inference_batch_size",
    "Rows per session run (above 1: requests were coalesced).",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096),
)

Feeds = dict[str, np.ndarray]
RunFn = Callable[[Feeds], Sequence[np.ndarray]]


@dataclass
class _Pending:
    feeds: Feeds
    rows: int
    key: tuple
    future: asyncio.Future[list[np.ndarray]] = field(repr=False)


def _shape_key(feeds: Feeds) -> tuple:
    return tuple((name, array.dtype.str, array.shape[1:]) for name, array in feeds.items())


class Batcher:
    """Coalesces `infer` calls of one session. Lives on one event loop."""

    def __init__(
        self,
        run: RunFn,
        executor: Executor,
        *,
        max_batch_size: int,
        max_queue_delay_us: int,
        batchable: bool = True,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._run = run
        self._executor = executor
        self._max_rows = max_batch_size if batchable else 1
        self._delay_s = max_queue_delay_us / 1e6
        self._batchable = batchable
        self._on_batch = on_batch
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._running = False
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def infer(self, feeds: Feeds) -> list[np.ndarray]:
        """Every output of the session for exactly these rows, in signature order."""
        loop = self._loop or asyncio.get_running_loop()
        self._loop = loop
        rows = next(iter(feeds.values())).shape[0] if feeds else 0
        future: asyncio.Future[list[np.ndarray]] = loop.create_future()
        self._queue.append(_Pending(feeds, rows, _shape_key(feeds), future))
        self._queued_rows += rows
        if not self._running:
            if self._queued_rows >= self._max_rows or self._delay_s == 0:
                self._start_soon()
            elif self._timer is None:
                self._timer = loop.call_later(self._delay_s, self._start)
        return await future

    # -- scheduling --------------------------------------------------------------------------

    def _start_soon(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        # call_soon rather than starting now: requests of this loop iteration can still join.
        self._timer = self._loop.call_soon(self._start)

    def _start(self) -> None:
        self._timer = None
        if self._running or not self._queue:
            return
        batch = self._take()
        self._running = True
        task = self._loop.create_task(self._execute(batch))
        task.add_done_callback(self._finished)

    def _take(self) -> list[_Pending]:
        first = self._queue.popleft()
        batch, rows = [first], first.rows
        if self._batchable:
            while self._queue:
                head = self._queue[0]
                if head.key != first.key or rows + head.rows > self._max_rows:
                    break
                batch.append(self._queue.popleft())
                rows += head.rows
        self._queued_rows -= rows
        return batch

    def _finished(self, _task: asyncio.Task) -> None:
        self._running = False
        if self._queue:
            # These waited through a whole run already; no further delay.
            self._start_soon()

    # -- running -----------------------------------------------------------------------------

    async def _execute(self, batch: list[_Pending]) -> None:
        live = [p for p in batch if not p.future.cancelled()]
        if not live:
            return
        if len(live) == 1:
            feeds = live[0].feeds
        else:
            feeds = {name: np.concatenate([p.feeds[name] for p in live]) for name in live[0].feeds}
        total = sum(p.rows for p in live)
        try:
            outputs = await self._loop.run_in_executor(self._executor, self._run, feeds)
        except BaseException as error:  # noqa: BLE001 - handed to every caller of the batch
            for pending in live:
                if not pending.future.done():
                    pending.future.set_exception(error)
            if isinstance(error, asyncio.CancelledError):
                raise
            return
        if self._on_batch is not None:
            self._on_batch(total)
        if len(live) == 1:
            if not live[0].future.done():
                live[0].future.set_result(list(outputs))
            return
        start = 0
        for pending in live:
            end = start + pending.rows
            if not pending.future.done():
                pending.future.set_result([out[start:end] for out in outputs])
            start = end

    @property
    def idle(self) -> bool:
        return not self._running and not self._queue
