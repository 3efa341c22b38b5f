"""Helpers of the inference integration tests (imported by conftest and the tests)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from google.protobuf.timestamp_pb2 import Timestamp

from flywheel.common import announce
from flywheel.common.grpc.client import wait_for_serving_async
from flywheel.common.kafka.producer import Producer
from flywheel.common.kafka.topics import Topics
from flywheel.common.registry import CHAMPION, ModelRegistry
from flywheel.common.settings import CommonSettings
from flywheel.inference import registration
from flywheel.inference.app import InferenceApp
from flywheel.inference.settings import InferenceSettings
from flywheel.inference.testing_models import feature_names
from flywheel.v1 import common_pb2, events_pb2

SPEC_PATH = Path(__file__).resolve().parents[3] / "flywheel.yaml"
N_FEATURES = 24


def register(registry: ModelRegistry, data: bytes, alias: str | None = CHAMPION):
    meta = registry.register("churn", data, task=1, entity_type="customer",
                             feature_names=feature_names(N_FEATURES),
                             output_names=["label", "probabilities"])
    if alias:
        registry.promote("churn", meta.version, alias)
    return meta


def register_byo(registry: ModelRegistry, folder: Path, name: str, model, *,
                 features: list[str], mappings: tuple[str, ...] = (), threshold: float = 0.0,
                 alias: str | None = CHAMPION, spec=None, task: str = ""):
    """A model brought from elsewhere, registered as `flywheel models register` does it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{len(list(folder.iterdir()))}.onnx"
    path.write_bytes(model.SerializeToString())
    planned = registration.plan(
        registration.Request(artifact=path, name=name, features=features, mappings=mappings,
                             threshold=threshold, task=task),
        spec, max_bytes=1 << 24, user="tester", now_ms=int(time.time() * 1000))
    meta = registry.register(
        name, planned.artifact, task=planned.task, entity_type=planned.entity_type,
        feature_names=planned.features, output_names=planned.outputs, lineage=planned.lineage,
        files=planned.files, details=planned.details)
    if alias:
        registry.promote(name, meta.version, alias)
    return meta


def customer_event(entity_id: str, values: dict[str, float | int | str]) -> events_pb2.Event:
    """An event of a `customer` now: floats as doubles, ints as int64, strings as strings."""
    now = Timestamp()
    now.GetCurrentTime()
    return events_pb2.Event(
        entity_type="customer", entity_id=entity_id, event_time=now,
        features={k: _feature_value(v) for k, v in values.items()},
    )


def _feature_value(value: float | int | str) -> common_pb2.FeatureValue:
    if isinstance(value, str):
        return common_pb2.FeatureValue(string_value=value)
    if isinstance(value, int):
        return common_pb2.FeatureValue(int64_value=value)
    return common_pb2.FeatureValue(double_value=value)


async def start_inference(common: CommonSettings, settings: InferenceSettings) -> InferenceApp:
    app = InferenceApp(common, settings)
    await app.start()
    try:
        await wait_for_serving_async(f"127.0.0.1:{app.port}", 60.0)
    except BaseException:
        await app.stop()
        raise
    return app


def publish_change(common: CommonSettings, registry: ModelRegistry, version: int, change: str,
                   alias_changes: list[tuple[str, int, int]]) -> None:
    """What `flywheel models promote` does after writing the registry."""
    topics = Topics(common.namespace)
    producer = Producer(common.kafka_bootstrap, client_id="test-announcer")
    try:
        record = announce.announcement(
            registry.get("churn", version), events_pb2.ModelVersionChange.Value(change),
            alias_changes, registry.aliases("churn"), "test",
        )
        announce.publish(producer, topics, record, 10.0)
    finally:
        producer.close(5.0)


def read_predictions(common: CommonSettings, expected: int, timeout_s: float = 20.0,
                     settle_s: float = 1.0, keys: dict[str, bytes] | None = None,
                     ) -> list[events_pb2.PredictionLogged]:
    """Every record of the predictions topic from the beginning (waits for `expected`, then
    `settle_s` more to catch duplicates). `keys`, when given, collects prediction id -> key."""
    topic = Topics(common.namespace).predictions
    consumer = Consumer({"bootstrap.servers": common.kafka_bootstrap, "group.id": "unused",
                         "enable.auto.commit": False, "isolation.level": "read_committed"})
    consumer.assign([TopicPartition(topic.name, p, 0) for p in range(topic.partitions)])
    records: list[events_pb2.PredictionLogged] = []
    deadline = time.monotonic() + timeout_s
    settle_until = None
    try:
        while time.monotonic() < deadline:
            if len(records) >= expected:
                settle_until = settle_until or time.monotonic() + settle_s
                if time.monotonic() >= settle_until:
                    break
            for message in consumer.consume(500, 0.2):
                if message.error() is None:
                    records.append(topic.decode(message.value()))
                    if keys is not None:
                        keys[records[-1].prediction_id] = message.key()
    finally:
        consumer.close()
    return records


async def poll_until(check: Callable, timeout_s: float, what: str, interval_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        await asyncio.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
