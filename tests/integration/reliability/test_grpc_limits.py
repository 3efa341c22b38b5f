"""Overload and deadlines on the inference service's Predict (by entity id), whose one
dependency on the request path, the feature store, is a stand-in here that answers at
once, or holds every call until released, or never answers: the delay is the test's to set.

- Overload: with ``max_concurrent_rpcs`` = 4, twice that many calls in flight: the excess
  gets RESOURCE_EXHAUSTED at once (never UNKNOWN), the admitted ones succeed, a sustained
  load at twice the admitted concurrency sheds with RESOURCE_EXHAUSTED while the admitted
  calls keep their latency, and a plain call right after the burst succeeds.
- Deadlines: a feature store slower than the caller's deadline gives UNAVAILABLE naming it,
  before that deadline (the server keeps a margin of the caller's time to answer in; see
  flywheel.common.dependency), the server's own call to the feature store is cancelled (its
  resources freed), and the server serves the next call normally. A caller deadline that
  leaves no time to ask the feature store at all is DEADLINE_EXCEEDED: the caller's own.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator

import grpc
import pytest
from reliability_kit import report, start_inference

from flywheel.common.grpc.client import aio_channel
from flywheel.inference.settings import InferenceSettings
from flywheel.v1 import (
    common_pb2,
    features_pb2,
    features_pb2_grpc,
    prediction_pb2,
    prediction_pb2_grpc,
)

LIMIT = 4


class StandInFeatureStore(features_pb2_grpc.FeatureStoreServiceServicer):
    """GetOnlineFeatures that answers FOUND with fixed values, after ``gate`` opens."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.gate.set()
        self.started = 0
        self.waiting = 0
        self.cancelled_after_s: list[float] = []

    async def GetOnlineFeatures(self, request, context):
        self.started += 1
        began = time.monotonic()
        self.waiting += 1
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled_after_s.append(time.monotonic() - began)
            raise
        finally:
            self.waiting -= 1
        values = [common_pb2.FeatureValue(double_value=0.1 * i)
                  for i in range(len(request.feature_names))]
        return features_pb2.GetOnlineFeaturesResponse(
            feature_names=request.feature_names,
            entities=[features_pb2.EntityFeatures(
                entity_id=entity_id, status=features_pb2.FEATURE_STATUS_FOUND, values=values)
                for entity_id in request.entity_ids],
        )


@pytest.fixture
async def stand_in() -> AsyncIterator[tuple[StandInFeatureStore, str]]:
    servicer = StandInFeatureStore()
    server = grpc.aio.server()
    features_pb2_grpc.add_FeatureStoreServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        servicer.gate.set()
        await server.stop(0)


def predict_request(entity_id: str) -> prediction_pb2.PredictRequest:
    return prediction_pb2.PredictRequest(
        model="churn", entity_ids=prediction_pb2.EntityIds(ids=[entity_id]))


async def timed_predict(stub, entity_id: str, timeout: float) -> tuple[str, float]:
    started = time.monotonic()
    try:
        reply = await stub.Predict(predict_request(entity_id), timeout=timeout)
        assert reply.predictions[0].status == prediction_pb2.ROW_STATUS_OK, reply
        code = "OK"
    except grpc.aio.AioRpcError as error:
        code = error.code().name
    return code, time.monotonic() - started


async def sustained(stub, clients: int, seconds: float) -> tuple[Counter, list[float]]:
    """``clients`` callers, each calling back to back for ``seconds`` (20 ms pause after a
    RESOURCE_EXHAUSTED: the load generator shares this process and its event loop with the
    server, so a caller spinning on refusals would slow the server down by itself)."""
    codes: Counter = Counter()
    latencies: list[float] = []
    end = time.monotonic() + seconds

    async def caller(n: int) -> None:
        i = 0
        while time.monotonic() < end:
            code, elapsed = await timed_predict(stub, f"c{n}-{i}", 10.0)
            codes[code] += 1
            if code == "OK":
                latencies.append(elapsed)
            elif code == "RESOURCE_EXHAUSTED":
                await asyncio.sleep(0.02)  # a shed caller backs off before retrying
            i += 1

    await asyncio.gather(*(caller(n) for n in range(clients)))
    return codes, latencies


def p99(latencies: list[float]) -> float:
    return statistics.quantiles(latencies, n=100)[98] if len(latencies) >= 2 else latencies[0]


async def test_overload_sheds_with_resource_exhausted_and_recovers(common, champion, stand_in):
    store, target = stand_in
    app = await start_inference(common, InferenceSettings(
        grpc_port=0, metrics_port=0, feature_store_target=target, max_concurrent_rpcs=LIMIT))
    try:
        async with aio_channel(f"127.0.0.1:{app.port}") as channel:
            stub = prediction_pb2_grpc.PredictionServiceStub(channel)
            # Burst: 2x the limit while the feature store holds every admitted call.
            store.gate.clear()
            calls = [asyncio.create_task(timed_predict(stub, f"b{i}", 20.0))
                     for i in range(2 * LIMIT)]
            deadline = time.monotonic() + 10
            # Admitted Predicts wait on the feature store (concurrent fetches may share a call).
            while (sum(c.done() for c in calls) < LIMIT or app.server.admission.active < LIMIT
                   or store.waiting < 1) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            shed_early = [c.result() for c in calls if c.done()]
            held = app.server.admission.active
            store.gate.set()
            burst = await asyncio.gather(*calls)
            burst_codes = Counter(code for code, _ in burst)

            # Baseline at exactly the limit: every call admitted (a call stops counting when
            # its handler ends, before the caller has the answer and sends the next one).
            baseline_codes, baseline = await sustained(stub, LIMIT, 2.0)
            load_codes, loaded = await sustained(stub, 2 * LIMIT, 2.0)

            recovery_code, recovery_s = await timed_predict(stub, "after", 5.0)
    finally:
        await app.stop()
    report(
        "overload, max_concurrent_rpcs=4", burst_calls=2 * LIMIT, burst=dict(burst_codes),
        admitted_and_held=held,
        shed_latency_max_s=f"{max(e for _, e in shed_early):.3f}",
        baseline_4_clients=dict(baseline_codes), baseline_p99_s=f"{p99(baseline):.3f}",
        load_8_clients=dict(load_codes), load_p99_s=f"{p99(loaded):.3f}",
        recovery=recovery_code, recovery_s=f"{recovery_s:.3f}",
    )
    # The burst: exactly the limit admitted (and answered once released), the rest shed at
    # once, while the admitted calls were still held.
    assert held == LIMIT
    assert burst_codes == Counter({"OK": LIMIT, "RESOURCE_EXHAUSTED": LIMIT}), burst_codes
    assert sorted(code for code, _ in shed_early) == ["RESOURCE_EXHAUSTED"] * LIMIT
    assert max(e for _, e in shed_early) < 1.0
    # Sustained load at 2x: only OK or RESOURCE_EXHAUSTED, never UNKNOWN or anything else.
    assert set(baseline_codes) == {"OK"}, baseline_codes
    assert set(load_codes) <= {"OK", "RESOURCE_EXHAUSTED"}, load_codes
    assert load_codes["OK"] > 0
    # Admitted calls keep their latency (generous: the machine and the process are shared).
    assert p99(loaded) < 3 * p99(baseline) + 0.5
    assert recovery_code == "OK" and recovery_s < 1.0


async def named_predict(stub, entity_id: str, timeout: float) -> tuple[str, str, float]:
    """(status name, details, seconds) of a Predict expected to fail."""
    started = time.monotonic()
    try:
        await stub.Predict(predict_request(entity_id), timeout=timeout)
    except grpc.aio.AioRpcError as error:
        return error.code().name, error.details() or "", time.monotonic() - started
    return "OK", "", time.monotonic() - started


async def test_a_slow_feature_store_is_unavailable_in_time(common, champion, stand_in):
    store, target = stand_in
    app = await start_inference(common, InferenceSettings(
        grpc_port=0, metrics_port=0, feature_store_target=target, feature_store_timeout_s=1.5))
    outcomes = []
    try:
        async with aio_channel(f"127.0.0.1:{app.port}") as channel:
            stub = prediction_pb2_grpc.PredictionServiceStub(channel)
            store.gate.clear()  # the feature store never answers from now on
            # The caller's deadline is shorter than the server's own feature-store timeout,
            # then longer: either way UNAVAILABLE naming the feature store, before the
            # earlier of the two.
            for caller_deadline, expected_by in ((0.8, 0.8), (5.0, 1.5)):
                cancelled_before = len(store.cancelled_after_s)
                code, details, elapsed = await named_predict(stub, "slow", caller_deadline)
                deadline = time.monotonic() + 2
                while len(store.cancelled_after_s) == cancelled_before \
                        and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                freed = store.cancelled_after_s[cancelled_before:]
                outcomes.append((caller_deadline, code, round(elapsed, 3),
                                 round(freed[0], 3) if freed else None))
                assert code == "UNAVAILABLE", outcomes
                assert details.startswith(f"the feature store at {target} did not answer"), details
                assert elapsed < min(caller_deadline, expected_by + 0.3), outcomes
                # The server gave up its own call to the feature store by then too.
                assert freed and freed[0] < expected_by + 0.5, outcomes
            # No time left to ask: the caller's own deadline, DEADLINE_EXCEEDED.
            no_time = await named_predict(stub, "no-time", 0.001)
            assert no_time[0] == "DEADLINE_EXCEEDED", no_time
            store.gate.set()
            after_code, after_s = await timed_predict(stub, "after", 5.0)
    finally:
        await app.stop()
    report("deadline, feature store never answers",
           calls=[{"deadline_s": d, "code": c, "elapsed_s": e, "dependency_cancelled_after_s": f}
                  for d, c, e, f in outcomes],
           next_call=after_code, next_call_s=f"{after_s:.3f}", held_at_end=store.waiting)
    assert after_code == "OK" and after_s < 1.0
    assert store.waiting == 0
