"""The dynamic batcher: coalescing, splitting back, isolation of shapes and errors."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from flywheel.inference.batcher import Batcher


class RecordingModel:
    """Doubles its input; remembers the row count of every run."""

    def __init__(self, fail_on: float | None = None) -> None:
        self.batches: list[int] = []
        self.fail_on = fail_on

    def __call__(self, feeds):
        x = feeds["x"]
        self.batches.append(x.shape[0])
        if self.fail_on is not None and (x == self.fail_on).any():
            raise ValueError("poisoned row")
        return [x * 2, x.sum(axis=1)]


@pytest.fixture
def executor():
    pool = ThreadPoolExecutor(1)
    yield pool
    pool.shutdown()


def _rows(start: int, n: int, width: int = 3) -> np.ndarray:
    return np.arange(start, start + n * width, dtype=np.float32).reshape(n, width)


async def test_concurrent_requests_are_coalesced_and_split_back(executor):
    model = RecordingModel()
    seen: list[int] = []
    batcher = Batcher(model, executor, max_batch_size=64, max_queue_delay_us=20_000,
                      on_batch=seen.append)
    inputs = [_rows(i * 10, 1 + i % 3) for i in range(20)]
    outputs = await asyncio.gather(*(batcher.infer({"x": x}) for x in inputs))
    for x, (doubled, summed) in zip(inputs, outputs):
        np.testing.assert_array_equal(doubled, x * 2)
        np.testing.assert_array_equal(summed, x.sum(axis=1))
    assert max(model.batches) > 1
    assert sum(model.batches) == sum(x.shape[0] for x in inputs) == sum(seen)
    assert len(model.batches) < len(inputs)


async def test_batch_never_exceeds_max_rows_but_a_big_request_runs_alone(executor):
    model = RecordingModel()
    batcher = Batcher(model, executor, max_batch_size=4, max_queue_delay_us=5_000)
    inputs = [_rows(i, 1) for i in range(9)] + [_rows(100, 7)]
    outputs = await asyncio.gather(*(batcher.infer({"x": x}) for x in inputs))
    assert all(b <= 4 for b in model.batches[:-1]) and 7 in model.batches
    for x, (doubled, _) in zip(inputs, outputs):
        np.testing.assert_array_equal(doubled, x * 2)


async def test_different_shapes_are_never_stacked(executor):
    model = RecordingModel()
    batcher = Batcher(model, executor, max_batch_size=64, max_queue_delay_us=5_000)
    narrow, wide = _rows(0, 2, width=3), _rows(0, 2, width=5)
    a, b = await asyncio.gather(batcher.infer({"x": narrow}), batcher.infer({"x": wide}))
    np.testing.assert_array_equal(a[0], narrow * 2)
    np.testing.assert_array_equal(b[0], wide * 2)
    assert model.batches == [2, 2]


async def test_a_failing_run_fails_its_callers_and_the_batcher_goes_on(executor):
    model = RecordingModel(fail_on=-1.0)
    batcher = Batcher(model, executor, max_batch_size=64, max_queue_delay_us=5_000)
    poisoned = np.full((1, 3), -1.0, dtype=np.float32)
    results = await asyncio.gather(
        batcher.infer({"x": poisoned}), batcher.infer({"x": _rows(0, 1)}),
        return_exceptions=True,
    )
    assert all(isinstance(r, ValueError) for r in results)
    doubled, _ = await batcher.infer({"x": _rows(0, 2)})
    np.testing.assert_array_equal(doubled, _rows(0, 2) * 2)
    await asyncio.sleep(0.01)
    assert batcher.idle


async def test_non_batchable_models_run_one_request_at_a_time(executor):
    model = RecordingModel()
    batcher = Batcher(model, executor, max_batch_size=64, max_queue_delay_us=0, batchable=False)
    await asyncio.gather(*(batcher.infer({"x": _rows(i, 2)}) for i in range(5)))
    assert model.batches == [2] * 5


async def test_zero_delay_still_coalesces_what_queued_during_a_run(executor):
    model = RecordingModel()
    batcher = Batcher(model, executor, max_batch_size=64, max_queue_delay_us=0)
    await asyncio.gather(*(batcher.infer({"x": _rows(i, 1)}) for i in range(30)))
    assert sum(model.batches) == 30 and max(model.batches) > 1


async def test_fast_runs_move_onto_the_loop_and_answer_the_same(executor):
    import threading

    threads: list[int] = []
    model = RecordingModel()

    def run(feeds):
        threads.append(threading.get_ident())
        return model(feeds)

    batcher = Batcher(run, executor, max_batch_size=64, max_queue_delay_us=0,
                      inline_max_run_us=50_000)
    for i in range(12):  # calibration: the first runs of a size class use the worker thread
        doubled, _ = await batcher.infer({"x": _rows(i, 1)})
        np.testing.assert_array_equal(doubled, _rows(i, 1) * 2)
    loop_thread = threading.get_ident()
    assert threads[0] != loop_thread and threads[-1] == loop_thread
    inputs = [_rows(i * 10, 1) for i in range(20)]
    outputs = await asyncio.gather(*(batcher.infer({"x": x}) for x in inputs))
    for x, (doubled, summed) in zip(inputs, outputs):
        np.testing.assert_array_equal(doubled, x * 2)
        np.testing.assert_array_equal(summed, x.sum(axis=1))


async def test_slow_runs_stay_on_the_worker_thread(executor):
    import threading
    import time

    threads: list[int] = []

    def slow(feeds):
        threads.append(threading.get_ident())
        time.sleep(0.002)
        return [feeds["x"] * 2]

    batcher = Batcher(slow, executor, max_batch_size=64, max_queue_delay_us=0,
                      inline_max_run_us=100)
    for i in range(12):
        await batcher.infer({"x": _rows(i, 1)})
    assert threading.get_ident() not in threads


async def test_a_fast_model_timed_slow_on_the_thread_is_probed_back_onto_the_loop(executor):
    """Thread runs end after the GIL came back, which under load can take long: the estimate
    they give is only an upper bound. A class that looks slow but not very slow is probed
    on the loop, and the probe's exact time puts it back there."""
    import threading
    import time

    loop_thread = threading.get_ident()
    threads: list[int] = []

    def run(feeds):
        threads.append(threading.get_ident())
        if threading.get_ident() != loop_thread:
            time.sleep(0.0005)  # stands in for the wait for the GIL after the run
        return [feeds["x"] * 2]

    batcher = Batcher(run, executor, max_batch_size=64, max_queue_delay_us=0,
                      inline_max_run_us=100)
    for i in range(12):
        doubled, = await batcher.infer({"x": _rows(i, 1)})
        np.testing.assert_array_equal(doubled, _rows(i, 1) * 2)
    assert threads[0] != loop_thread
    assert threads[-4:] == [loop_thread] * 4


async def test_a_model_slower_than_the_bound_is_probed_rarely_and_stays_on_the_thread(executor):
    import threading
    import time

    loop_thread = threading.get_ident()
    threads: list[int] = []

    def slow(feeds):
        threads.append(threading.get_ident())
        time.sleep(0.0005)
        return [feeds["x"] * 2]

    batcher = Batcher(slow, executor, max_batch_size=64, max_queue_delay_us=0,
                      inline_max_run_us=100)
    for i in range(8 + 2 * 65 + 1):
        await batcher.infer({"x": _rows(i, 1)})
    on_loop = [i for i, t in enumerate(threads) if t == loop_thread]
    # One probe right after calibration, then one every 64 thread runs.
    assert on_loop == [8, 8 + 65, 8 + 130]


async def test_a_full_batch_finding_the_batcher_idle_runs_at_once_on_the_loop(executor):
    import threading

    threads: list[int] = []
    sizes: list[int] = []

    def run(feeds):
        threads.append(threading.get_ident())
        return [feeds["x"] * 2]

    batcher = Batcher(run, executor, max_batch_size=4, max_queue_delay_us=50_000,
                      inline_max_run_us=50_000, on_batch=sizes.append)
    for i in range(8):  # calibration of the size class of 5 rows, on the worker thread
        await batcher.infer({"x": _rows(i, 5)})
    loop = asyncio.get_running_loop()
    began = loop.time()
    doubled, = await batcher.infer({"x": _rows(100, 5)})
    np.testing.assert_array_equal(doubled, _rows(100, 5) * 2)
    assert loop.time() - began < 0.04  # no queue delay
    assert threads[-1] == threading.get_ident() and sizes == [5] * 9
    # A small request still waits for company and shares a run.
    small = await asyncio.gather(batcher.infer({"x": _rows(0, 1)}), batcher.infer({"x": _rows(1, 1)}))
    assert sizes[-1] == 2 and [d.shape for d, in small] == [(1, 3), (1, 3)]


async def test_timed_by_thread_cpu_time_a_wait_after_the_run_does_not_count(executor):
    """With clock=time.thread_time (a session computing on the calling thread alone), the
    time a run spends waiting (for the GIL, say) is not run time: a fast model goes inline
    after calibration even when every run on the worker thread waits."""
    import threading
    import time

    loop_thread = threading.get_ident()
    threads: list[int] = []

    def run(feeds):
        threads.append(threading.get_ident())
        if threading.get_ident() != loop_thread:
            time.sleep(0.005)  # waiting costs no CPU time
        return [feeds["x"] * 2]

    batcher = Batcher(run, executor, max_batch_size=64, max_queue_delay_us=0,
                      inline_max_run_us=1000, clock=time.thread_time)
    for i in range(12):
        await batcher.infer({"x": _rows(i, 1)})
    assert threads[:8] == [threads[0]] * 8 and threads[0] != loop_thread
    assert threads[8:] == [loop_thread] * 4


async def test_a_trickle_of_requests_does_not_wait_for_company_and_a_burst_still_coalesces(executor):
    model = RecordingModel()
    loop = asyncio.get_running_loop()
    delay_s = 0.1
    batcher = Batcher(model, executor, max_batch_size=64, max_queue_delay_us=int(delay_s * 1e6))

    async def timed(x):
        began = loop.time()
        await batcher.infer({"x": x})
        return loop.time() - began

    # A fresh batcher expects company: its first lone request waits out the delay.
    assert await timed(_rows(0, 1)) >= delay_s * 0.9
    # Requests further apart than the delay: soon a lone one goes at once.
    waits = []
    for i in range(8):
        await asyncio.sleep(delay_s * 2.5)
        waits.append(await timed(_rows(i, 1)))
    assert waits[-1] < delay_s / 2, waits
    # A burst arriving together is still one run.
    runs_before = len(model.batches)
    burst = [_rows(i, 1) for i in range(10)]
    outputs = await asyncio.gather(*(batcher.infer({"x": x}) for x in burst))
    assert model.batches[runs_before:] == [10]
    for x, (doubled, _) in zip(burst, outputs):
        np.testing.assert_array_equal(doubled, x * 2)
