"""Helpers for the feedback tests: producing straight onto the topics, reading back.

Imported by name (the test folders are not packages; pytest puts this folder on sys.path)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from flywheel.common.kafka.headers import standard_headers
from flywheel.common.kafka.topics import Topic, Topics
from flywheel.common.settings import CommonSettings
from flywheel.v1 import common_pb2, events_pb2

REPO = Path(__file__).resolve().parents[3]
FEATURES = [f"f{i:02d}" for i in range(24)]


@pytest.fixture
def common(names, kafka_bootstrap, redis_url) -> CommonSettings:
    return CommonSettings(
        namespace=names.namespace, kafka_bootstrap=kafka_bootstrap, redis_url=redis_url,
        spec_path=REPO / "flywheel.yaml", log_json=False,
    )


@pytest.fixture
def topics(common) -> Topics:
    return Topics(common.namespace)


class RawProducer:
    def __init__(self, bootstrap: str) -> None:
        self._producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                                   "linger.ms": 10})

    def send(self, topic: Topic, key: str, message) -> None:
        while True:
            try:
                self._producer.produce(topic.name, key=key.encode(), value=topic.encode(message),
                                       headers=standard_headers(topic.type_name))
                return
            except BufferError:
                self._producer.poll(0.05)

    def flush(self) -> None:
        assert self._producer.flush(30) == 0


@pytest.fixture
def raw_producer(kafka_bootstrap) -> RawProducer:
    producer = RawProducer(kafka_bootstrap)
    yield producer
    producer.flush()


def prediction(pid: str, when: float, *, version: int = 1, key_role=common_pb2.MODEL_ROLE_CHAMPION,
               shadow_of: str | None = None) -> events_pb2.PredictionLogged:
    record = events_pb2.PredictionLogged(
        prediction_id=pid, model_name="churn", model_version=version,
        artifact_sha256="0" * 64, role=key_role, entity_type="customer",
        entity_id=f"c-{pid}", feature_names=FEATURES,
        features=[float(i) + 0.5 for i in range(24)],
        output=common_pb2.ModelOutput(predicted_class=1, probabilities=[0.3, 0.7]),
        task=common_pb2.MODEL_TASK_BINARY_CLASSIFICATION,
    )
    record.prediction_time.FromNanoseconds(int(when * 1e9))
    return record


def feedback(pid: str, label: int, when: float, key: str = "") -> events_pb2.FeedbackRecorded:
    record = events_pb2.FeedbackRecorded(
        prediction_id=pid, label=common_pb2.Label(class_label=label),
        source=common_pb2.LABEL_SOURCE_APPLICATION, idempotency_key=key or f"k-{pid}",
    )
    record.event_time.FromNanoseconds(int(when * 1e9))
    record.received_time.FromNanoseconds(int(when * 1e9))
    return record


def read_committed(bootstrap: str, topic: Topic, expect: int, timeout_s: float,
                   settle_s: float = 1.5) -> list:
    """Reads a topic from the start (read_committed) until `expect` records, then `settle_s`
    more seconds of quiet to catch extras; returns the decoded records."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"reader-{time.monotonic_ns()}",
        "isolation.level": "read_committed", "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    })
    metadata = consumer.list_topics(topic.name, timeout=10)
    partitions = list(metadata.topics[topic.name].partitions)
    consumer.assign([TopicPartition(topic.name, p, 0) for p in partitions])
    out: list = []
    deadline = time.monotonic() + timeout_s
    quiet_until = None
    try:
        while time.monotonic() < deadline:
            batch = consumer.consume(1000, 0.2)
            for message in batch:
                if message.error() is None:
                    out.append(topic.decode(message.value()))
            if len(out) >= expect:
                quiet_until = quiet_until or time.monotonic() + settle_s
                if time.monotonic() >= quiet_until:
                    break
    finally:
        consumer.close()
    return out


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
