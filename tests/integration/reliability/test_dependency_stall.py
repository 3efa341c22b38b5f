"""A dependency stalled past the caller's deadline (catalogue item 21): Redis SIGSTOPped under
the feedback service and under the feature store, and the feature store process itself
SIGSTOPped under inference. Every caller gets UNAVAILABLE naming the stalled part, before its
deadline (never INTERNAL, never a late DEADLINE_EXCEEDED), and the services answer again
within seconds of SIGCONT. Redis busy running a script (it answers BUSY to everything else)
is UNAVAILABLE naming it too. The Redis here is the test module's own, never the session's.

The rule (flywheel.common.dependency): a wait on a dependency lasts at most the smaller of its
own timeout (FLYWHEEL_REDIS_TIMEOUT_S, FLYWHEEL_INFERENCE_FEATURE_STORE_TIMEOUT_S, 2 s by
default) and the caller's remaining time less a tenth of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import redis
from google.protobuf.timestamp_pb2 import Timestamp
from reliability_kit import N_FEATURES, read_topic, report, start_inference
from stall_kit import (
    Outcome,
    PrivateRedis,
    start_service,
    stop_service,
    stopped,
    timed,
)

from flywheel.common.grpc.client import aio_channel, wait_for_serving_async
from flywheel.common.kafka.admin import ensure_topics
from flywheel.common.kafka.topics import Topics
from flywheel.common.settings import CommonSettings
from flywheel.features.app import FeaturesApp
from flywheel.features.settings import FeaturesSettings
from flywheel.feedback.app import FeedbackApp
from flywheel.feedback.settings import FeedbackSettings
from flywheel.inference.app import InferenceApp
from flywheel.inference.settings import InferenceSettings
from flywheel.inference.testing_models import feature_names
from flywheel.infra.ports import free_port
from flywheel.v1 import (
    common_pb2,
    events_pb2,
    features_pb2,
    features_pb2_grpc,
    feedback_pb2,
    feedback_pb2_grpc,
    prediction_pb2,
    prediction_pb2_grpc,
)

SHORT_DEADLINE_S = 1.0  # shorter than the dependencies' own timeouts
LONG_DEADLINE_S = 5.0  # longer: their own timeouts (2 s) answer first
RECOVERY_LIMIT_S = 10.0


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> PrivateRedis:
    redis = PrivateRedis(tmp_path_factory.mktemp("private-redis"))
    try:
        redis.up()
        yield redis
    finally:
        redis.down()


@pytest.fixture
def on_private_redis(common: CommonSettings, private_redis: PrivateRedis) -> CommonSettings:
    return common.model_copy(update={"redis_url": private_redis.url})


async def recovery_seconds(call: Callable[[], Awaitable]) -> float:
    """Seconds until `call()` succeeds again (each try with its own deadline)."""
    started = time.monotonic()
    while True:
        outcome = await timed(call())
        if outcome.code == "OK":
            return time.monotonic() - started
        assert time.monotonic() - started < RECOVERY_LIMIT_S, outcome
        await asyncio.sleep(0.1)


def assert_named_in_time(outcomes: dict[str, tuple[float, Outcome]], *names: str) -> None:
    for call, (deadline, outcome) in outcomes.items():
        assert outcome.code == "UNAVAILABLE", (call, outcome)
        for name in names:
            assert name in outcome.details, (call, outcome)
        assert outcome.seconds < deadline, (call, outcome)


# -- feedback ----------------------------------------------------------------------------------


def label(prediction_id: str) -> feedback_pb2.RecordFeedbackRequest:
    return feedback_pb2.RecordFeedbackRequest(
        prediction_id=prediction_id, label=common_pb2.Label(class_label=1),
        idempotency_key=f"key-{prediction_id}")


async def test_feedback_with_redis_stalled_is_unavailable_naming_redis_in_time(
    on_private_redis, private_redis, names
):
    common = on_private_redis
    app = FeedbackApp(common, FeedbackSettings(grpc_port=0, metrics_port=0,
                                               instance_id=names.namespace))
    await app.start()
    accepted: list[str] = []
    try:
        target = f"127.0.0.1:{app.port}"
        await wait_for_serving_async(target, 60.0)
        async with aio_channel(target) as channel:
            stub = feedback_pb2_grpc.FeedbackServiceStub(channel)
            accepted.append((await stub.RecordFeedback(label("before"), timeout=10)).idempotency_key)

            async def stream(prefix: str):
                for i in range(3):
                    yield label(f"{prefix}-{i}")

            calls = {
                "RecordFeedback": lambda d: stub.RecordFeedback(label("s1"), timeout=d),
                "RecordFeedbackBatch": lambda d: stub.RecordFeedbackBatch(
                    feedback_pb2.RecordFeedbackBatchRequest(feedback=[label("s2"), label("s3")]),
                    timeout=d),
                "RecordFeedbackStream": lambda d: stub.RecordFeedbackStream(
                    stream(f"s4-{d}"), timeout=d),
            }
            outcomes = {}
            with private_redis.stalled():
                for deadline in (SHORT_DEADLINE_S, LONG_DEADLINE_S):
                    for method, call in calls.items():
                        outcomes[f"{method} {deadline:g} s"] = (deadline, await timed(call(deadline)))
            recovered_s = await recovery_seconds(lambda: stub.RecordFeedback(label("after"),
                                                                              timeout=2.0))
            accepted.append("key-after")
    finally:
        await app.stop()
    # Nothing accepted is lost: what was acknowledged before and after is on the topic.
    topic = Topics(common.namespace).feedback
    recorded = {topic.decode(v).idempotency_key
                for v in read_topic(common.kafka_bootstrap, topic.name, topic.partitions)}
    report("feedback, Redis stalled",
           calls={name: o.summary() for name, (_, o) in outcomes.items()},
           recovered_s=f"{recovered_s:.2f}", lost=len(set(accepted) - recorded))
    assert_named_in_time(outcomes, f"Redis at {private_redis.address}")
    assert set(accepted) <= recorded


# -- Predict and the feature store ---------------------------------------------------------------


@pytest.fixture
async def inference_for(common, champion) -> AsyncIterator[Callable]:
    """`await inference_for(feature_store_target)`: the inference service in-process, with
    the default feature-store timeout; its address."""
    started: list[InferenceApp] = []

    async def start(feature_store_target: str) -> str:
        started.append(await start_inference(common, InferenceSettings(
            grpc_port=0, metrics_port=0, feature_store_target=feature_store_target)))
        return f"127.0.0.1:{started[-1].port}"

    yield start
    for app in started:
        await app.stop()


def customer(entity_id: str) -> events_pb2.Event:
    now = Timestamp()
    now.GetCurrentTime()
    return events_pb2.Event(
        entity_type="customer", entity_id=entity_id, event_time=now,
        features={name: common_pb2.FeatureValue(double_value=0.1 * i)
                  for i, name in enumerate(feature_names(N_FEATURES))})


def predict(stub, deadline_s: float) -> Awaitable:
    return stub.Predict(prediction_pb2.PredictRequest(
        model="churn", entity_ids=prediction_pb2.EntityIds(ids=["c1"])), timeout=deadline_s)


async def test_predict_with_the_feature_stores_redis_stalled_is_unavailable_naming_it_in_time(
    on_private_redis, private_redis, inference_for, tmp_path
):
    features_app = FeaturesApp(on_private_redis, FeaturesSettings(
        grpc_port=0, metrics_port=0, snapshot_dir=tmp_path / "snapshots"))
    await features_app.start()
    try:
        await wait_for_serving_async(features_app.target, 60.0)
        inference = await inference_for(features_app.target)
        async with aio_channel(features_app.target) as to_store, aio_channel(inference) as to_inference:
            store = features_pb2_grpc.FeatureStoreServiceStub(to_store)
            predictions = prediction_pb2_grpc.PredictionServiceStub(to_inference)
            write = features_pb2.WriteFeaturesRequest(rows=[customer("c1")])
            assert (await store.WriteFeatures(write, timeout=10)).written_count == 1
            assert (await predict(predictions, 10)).predictions[0].status == \
                prediction_pb2.ROW_STATUS_OK
            read = features_pb2.GetOnlineFeaturesRequest(entity_type="customer", entity_ids=["c1"])
            with private_redis.stalled():
                store_calls = {
                    f"{method} {d:g} s": (d, await timed(call(d)))
                    for d in (SHORT_DEADLINE_S, LONG_DEADLINE_S)
                    for method, call in (
                        ("GetOnlineFeatures", lambda d: store.GetOnlineFeatures(read, timeout=d)),
                        ("WriteFeatures", lambda d: store.WriteFeatures(write, timeout=d)),
                    )
                }
                predict_calls = {f"Predict {d:g} s": (d, await timed(predict(predictions, d)))
                                 for d in (SHORT_DEADLINE_S, LONG_DEADLINE_S)}
            recovered_s = await recovery_seconds(lambda: predict(predictions, 2.0))
    finally:
        await features_app.stop()
    report("feature store's Redis stalled",
           calls={n: o.summary() for n, (_, o) in {**store_calls, **predict_calls}.items()},
           predict_recovered_s=f"{recovered_s:.2f}")
    redis_named = f"Redis at {private_redis.address}"
    assert_named_in_time(store_calls, redis_named)
    assert_named_in_time(predict_calls, f"the feature store at {features_app.target}", redis_named)


async def test_predict_with_the_feature_store_process_stopped_is_unavailable_naming_it_in_time(
    common, inference_for, tmp_path
):
    ensure_topics(common.kafka_bootstrap, [Topics(common.namespace).events,
                                           Topics(common.namespace).events.dlq])
    target = f"127.0.0.1:{free_port()}"
    process = start_service("flywheel.features", {
        "FLYWHEEL_NAMESPACE": common.namespace,
        "FLYWHEEL_KAFKA_BOOTSTRAP": common.kafka_bootstrap,
        "FLYWHEEL_REDIS_URL": common.redis_url,
        "FLYWHEEL_SPEC_PATH": str(common.spec_path),
        "FLYWHEEL_LOG_JSON": "false",
        "FLYWHEEL_FEATURES_GRPC_PORT": target.rsplit(":", 1)[1],
        "FLYWHEEL_FEATURES_METRICS_PORT": "0",
        "FLYWHEEL_FEATURES_SNAPSHOT_DIR": str(tmp_path / "snapshots"),
    }, tmp_path / "features.log")
    try:
        await wait_for_serving_async(target, 60.0)
        inference = await inference_for(target)
        async with aio_channel(target) as to_store, aio_channel(inference) as to_inference:
            store = features_pb2_grpc.FeatureStoreServiceStub(to_store)
            write = features_pb2.WriteFeaturesRequest(rows=[customer("c1")])
            assert (await store.WriteFeatures(write, timeout=10)).written_count == 1
            predictions = prediction_pb2_grpc.PredictionServiceStub(to_inference)
            assert (await predict(predictions, 10)).predictions[0].status == \
                prediction_pb2.ROW_STATUS_OK
            with stopped(process.pid):
                calls = {f"Predict {d:g} s": (d, await timed(predict(predictions, d)))
                         for d in (SHORT_DEADLINE_S, LONG_DEADLINE_S)}
            recovered_s = await recovery_seconds(lambda: predict(predictions, 2.0))
    finally:
        stop_service(process)
    report("feature store process stopped",
           calls={n: o.summary() for n, (_, o) in calls.items()},
           predict_recovered_s=f"{recovered_s:.2f}", log=str(Path(tmp_path / "features.log")))
    assert_named_in_time(calls, f"the feature store at {target} did not answer within")


def until_busy(client: redis.Redis, timeout_s: float = 10.0) -> None:
    """Returns once Redis answers BUSY (a script ran past busy-reply-threshold)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            client.ping()
        except redis.ResponseError as error:
            if str(error).startswith("BUSY"):
                return
            raise
        time.sleep(0.02)
    raise AssertionError(f"Redis not BUSY after {timeout_s}s")


async def test_redis_busy_running_a_script_is_unavailable_naming_it(
    on_private_redis, private_redis, tmp_path
):
    features_app = FeaturesApp(on_private_redis, FeaturesSettings(
        grpc_port=0, metrics_port=0, snapshot_dir=tmp_path / "snapshots"))
    await features_app.start()
    admin = redis.Redis.from_url(private_redis.url, socket_timeout=10)
    threshold = admin.config_get("busy-reply-threshold")["busy-reply-threshold"]
    try:
        await wait_for_serving_async(features_app.target, 60.0)
        async with aio_channel(features_app.target) as channel:
            store = features_pb2_grpc.FeatureStoreServiceStub(channel)
            write = features_pb2.WriteFeaturesRequest(rows=[customer("c1")])
            read = features_pb2.GetOnlineFeaturesRequest(entity_type="customer", entity_ids=["c1"])
            assert (await store.WriteFeatures(write, timeout=10)).written_count == 1
            admin.config_set("busy-reply-threshold", 100)
            # Redis runs one script at a time: this one never ends until SCRIPT KILL.
            spinning = asyncio.create_task(asyncio.to_thread(
                redis.Redis.from_url(private_redis.url).eval, "while true do end", 0))
            try:
                await asyncio.to_thread(until_busy, admin)
                calls = {
                    "GetOnlineFeatures": (LONG_DEADLINE_S, await timed(
                        store.GetOnlineFeatures(read, timeout=LONG_DEADLINE_S))),
                    "WriteFeatures": (LONG_DEADLINE_S, await timed(
                        store.WriteFeatures(write, timeout=LONG_DEADLINE_S))),
                }
            finally:
                admin.script_kill()
                with contextlib.suppress(redis.ResponseError):  # "Script killed by user"
                    await spinning
            recovered_s = await recovery_seconds(lambda: store.GetOnlineFeatures(read, timeout=2))
    finally:
        admin.config_set("busy-reply-threshold", threshold)
        admin.close()
        await features_app.stop()
    report("feature store's Redis busy with a script",
           calls={n: o.summary() for n, (_, o) in calls.items()},
           recovered_s=f"{recovered_s:.2f}")
    assert_named_in_time(calls, f"Redis at {private_redis.address} is unavailable: BUSY")
