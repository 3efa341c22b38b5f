"""Dynamic batching: concurrent requests for one model version share one session run.

A request queues its feeds (each input with the rows on its first dimension) and awaits a
future. The first request of an empty queue waits at most `max_queue_delay_us` for company,
but only while requests arrive closer together than that on average (smoothed gaps between
arrivals): under a trickle no company would come in time, and the wait would only add
latency, so it goes at the next loop iteration. Requests that queue while a run is in flight
are taken by the next run as soon as it can start. A batch stacks requests of the same input
shapes and dtypes, up to `max_batch_size` rows (a single request larger than that runs
alone), runs once, and is split back by row offsets, so each caller gets exactly the rows it
sent. A request of `max_batch_size` rows or more that finds the batcher idle (nothing
queued, no run in flight) has no company to wait for: when its size class runs inline
(below) it runs at once, without queueing.

Where a run happens: in the worker thread by default. Handing a run to a thread and waking the
event loop when it is done costs a few hundred microseconds of CPU (GIL hand-off, self-pipe
wake-up), while a small model answers a small batch in a few microseconds. With
`inline_max_run_us` set, the batcher times every run (smoothed per batch size class: 1, 2-3,
4-7, ... rows) and runs a batch directly on the event loop while runs of its size class take
less than that bound; a model that turns out slower (or gets slower) goes back to the worker
thread, so the loop is never blocked for much longer than that bound. Until it has timed a few
runs of a size class it uses the thread for that class.

A run is timed by `clock`. The wall clock (the default) also counts the wait for the GIL after
the run, on the loop and even more in the worker thread, where it can take milliseconds while
the loop is busy: under load a fast model would look slow and be kept on the thread by its
load. A session that computes on the calling thread alone (CPU, one intra-op thread) is
therefore timed by that thread's CPU time (`time.thread_time`), which leaves those waits out.
With the wall clock, a size class whose runs look slow, but not very slow (under
`_PROBE_CEILING` times the bound), has one batch in `_PROBE_EVERY` run on the loop as a probe,
and the probe's time replaces the class's estimate; a model slower than the bound then blocks
the loop for at most one probe now and then.
"""

from __future__ import annotations

import asyncio
import logging
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np
from prometheus_client import REGISTRY
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.utils import floatToGoString

log = logging.getLogger("flywheel.inference.batcher")

_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class BatchSizes:
    """`flywheel_inference_batch_size{model}`: rows per session run (above 1: requests were
    coalesced). A Prometheus histogram whose counts are plain integers, read when scraped:
    every run is counted on the event loop, so counting takes no lock."""

    def __init__(self) -> None:
        # model -> ([count per bucket, +Inf last], [sum of rows])
        self._by_model: dict[str, tuple[list[int], list[int]]] = {}

    def observer(self, model: str) -> Callable[[int], None]:
        buckets, total = self._by_model.setdefault(model, ([0] * (len(_BATCH_BUCKETS) + 1), [0]))

        def observe(rows: int) -> None:
            total[0] += rows
            buckets[bisect_left(_BATCH_BUCKETS, rows)] += 1

        return observe

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(
            "flywheel_inference_batch_size",
            "Rows per session run (above 1: requests were coalesced).",
            labels=["model"],
        )
        bounds = [*(floatToGoString(b) for b in _BATCH_BUCKETS), "+Inf"]
        for model, (buckets, total) in list(self._by_model.items()):
            cumulative, running = [], 0
            for bound, count in zip(bounds, list(buckets)):
                running += count
                cumulative.append((bound, running))
            family.add_metric([model], cumulative, sum_value=total[0])
        yield family


BATCH_SIZE = BatchSizes()
REGISTRY.register(BATCH_SIZE)

Feeds = dict[str, np.ndarray]
_PROBE = object()  # _inline_ok's answer for a probe run
RunFn = Callable[[Feeds], Sequence[np.ndarray]]


@dataclass(slots=True)
class _Pending:
    feeds: Feeds
    rows: int
    key: tuple
    future: asyncio.Future[list[np.ndarray]] = field(repr=False)


def _shape_key(feeds: Feeds) -> tuple:
    return tuple([(name, array.dtype, array.shape[1:]) for name, array in feeds.items()])


# Smoothing of the timed run durations (weight of the newest run), and how many timed runs
# it takes before a batch may run inline.
_EWMA_WEIGHT = 0.1
# Smoothing of the gaps between arrivals uses the same weight; one gap counts at most this
# many queue delays, so that after an idle spell a returning load waits for company again
# within a few requests.
_GAP_CAP_DELAYS = 10
_CALIBRATION_RUNS = 8
# A size class on the worker thread whose estimate is under this many times the inline bound
# runs one batch in _PROBE_EVERY on the loop, timed exactly.
_PROBE_CEILING = 20
_PROBE_EVERY = 64


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
        inline_max_run_us: int = 0,
        clock: Callable[[], float] = time.perf_counter,
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
        self._timer: asyncio.Handle | None = None  # a TimerHandle while delaying
        self._loop: asyncio.AbstractEventLoop | None = None
        # Smoothed seconds between arrivals (0 at first: the first requests wait for
        # company) and the last arrival's time.
        self._gap_s = 0.0
        self._last_arrival = 0.0
        # Inline runs (0: never): per size class (rows.bit_length()), the smoothed run time
        # and how many runs were timed.
        self._inline_max_s = inline_max_run_us / 1e6
        self._clock = clock
        self._run_s = [0.0] * 64
        self._timed_runs = [0] * 64
        # Per size class: worker-thread runs left before the next probe on the loop (the
        # first comes as soon as the class is calibrated).
        self._until_probe = [0] * 64

    async def infer(self, feeds: Feeds) -> list[np.ndarray]:
        """Every output of the session for exactly these rows, in signature order."""
        loop = self._loop or asyncio.get_running_loop()
        self._loop = loop
        company_likely = self._arrived(loop.time())
        rows = next(iter(feeds.values())).shape[0] if feeds else 0
        if rows >= self._max_rows and not self._running and not self._queue:
            # A batch by itself, and nothing waits: no company to wait for, no queue to join.
            inline = self._inline_ok(rows)
            if inline:
                outputs = self._timed(feeds, rows, inline is _PROBE)
                if self._on_batch is not None:
                    self._on_batch(rows)
                return list(outputs)
        future: asyncio.Future[list[np.ndarray]] = loop.create_future()
        self._queue.append(_Pending(feeds, rows, _shape_key(feeds), future))
        self._queued_rows += rows
        if not self._running:
            if self._queued_rows >= self._max_rows or not company_likely:
                self._start_soon()
            elif self._timer is None:
                self._timer = loop.call_later(self._delay_s, self._start)
        return await future

    # -- scheduling --------------------------------------------------------------------------

    def _arrived(self, now: float) -> bool:
        """Counts an arrival; whether others are likely to arrive within the queue delay."""
        if self._last_arrival:
            gap = min(now - self._last_arrival, _GAP_CAP_DELAYS * self._delay_s)
            self._gap_s += _EWMA_WEIGHT * (gap - self._gap_s)
        self._last_arrival = now
        return self._gap_s < self._delay_s

    def _start_soon(self) -> None:
        if self._timer is not None:
            if not isinstance(self._timer, asyncio.TimerHandle):
                return  # already due this iteration
            self._timer.cancel()
        # call_soon rather than starting now: requests of this loop iteration can still join.
        self._timer = self._loop.call_soon(self._start)

    def _start(self) -> None:
        self._timer = None
        if self._running or not self._queue:
            return
        batch = self._take()
        inline = self._inline_ok(sum(p.rows for p in batch))
        if inline:
            self._execute_inline(batch, probe=inline is _PROBE)
            if self._queue and self._timer is None:
                self._start_soon()
            return
        self._running = True
        task = self._loop.create_task(self._execute(batch))
        task.add_done_callback(self._finished)

    def _inline_ok(self, rows: int) -> bool | object:
        """For a batch of `rows`: True: run on the loop; _PROBE: run on the loop as a probe;
        False: the worker thread."""
        if not self._inline_max_s:
            return False
        size = rows.bit_length()
        if self._timed_runs[size] < _CALIBRATION_RUNS:
            return False
        estimate = self._run_s[size]
        if estimate < self._inline_max_s:
            return True
        if estimate < _PROBE_CEILING * self._inline_max_s:
            if self._until_probe[size] <= 0:
                self._until_probe[size] = _PROBE_EVERY
                return _PROBE
            self._until_probe[size] -= 1
        return False

    def _timed(self, feeds: Feeds, rows: int, probe: bool = False) -> Sequence[np.ndarray]:
        """Runs the session; remembers how long runs of this size class take (a probe's
        exact time replaces the estimate)."""
        clock = self._clock
        began = clock()
        try:
            return self._run(feeds)
        finally:
            spent = clock() - began
            size = rows.bit_length()
            # Written from the worker thread or the loop, one run at a time: no lock needed.
            if self._timed_runs[size] == 0 or probe:
                self._run_s[size] = spent
            else:
                self._run_s[size] += _EWMA_WEIGHT * (spent - self._run_s[size])
            self._timed_runs[size] += 1

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

    @staticmethod
    def _stack(live: list[_Pending]) -> Feeds:
        if len(live) == 1:
            return live[0].feeds
        return {name: np.concatenate([p.feeds[name] for p in live]) for name in live[0].feeds}

    def _settle(self, live: list[_Pending], total: int, outputs: Sequence[np.ndarray]) -> None:
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

    @staticmethod
    def _fail(live: list[_Pending], error: BaseException) -> None:
        for pending in live:
            if not pending.future.done():
                pending.future.set_exception(error)

    def _execute_inline(self, batch: list[_Pending], probe: bool = False) -> None:
        live = [p for p in batch if not p.future.cancelled()]
        if not live:
            return
        total = sum(p.rows for p in live)
        try:
            outputs = self._timed(self._stack(live), total, probe)
        except Exception as error:  # noqa: BLE001 - handed to every caller of the batch
            self._fail(live, error)
            return
        self._settle(live, total, outputs)

    async def _execute(self, batch: list[_Pending]) -> None:
        live = [p for p in batch if not p.future.cancelled()]
        if not live:
            return
        total = sum(p.rows for p in live)
        try:
            feeds = self._stack(live)
            if self._inline_max_s:
                outputs = await self._loop.run_in_executor(self._executor, self._timed, feeds, total)
            else:
                outputs = await self._loop.run_in_executor(self._executor, self._run, feeds)
        except BaseException as error:  # handed to every caller of the batch
            self._fail(live, error)
            if isinstance(error, asyncio.CancelledError):
                raise
            return
        self._settle(live, total, outputs)

    @property
    def idle(self) -> bool:
        return not self._running and not self._queue
