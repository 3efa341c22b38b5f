"""SIGKILL the feature store mid-stream, restart it: Redis ends equal to a full replay of the
topic from offset 0 through the newer-wins rule."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis
from confluent_kafka import Consumer, TopicPartition

from flywheel.bench.workload import random_event
from flywheel.common.grpc.client import wait_for_serving
from flywheel.common.kafka.admin import ensure_topics
from flywheel.common.kafka.producer import Producer
from flywheel.common.kafka.topics import Topics
from flywheel.common.spec import load_spec
from flywheel.common.validation import EventValidator
from flywheel.features.framed import layouts_of
from flywheel.features.keys import (
    ROW_EVENT_ID,
    ROW_RANK,
    ROW_TIME,
    VECTOR_VALUES,
    KeySpace,
)
from flywheel.features.online_store import Version
from flywheel.infra.ports import free_port
from flywheel.testing.feature_reference import newest_wins
from flywheel.v1 import events_pb2

EVENTS = 20_000
ENTITIES = 800


def redis_state(client: redis.Redis, keys: KeySpace) -> tuple[dict, dict]:
    rows, vectors = {}, {}
    row_prefix = keys.row_prefix("customer").encode()
    vector_prefix = keys.vector_prefix("customer").encode()
    for key in client.scan_iter(match=keys.prefix + "fw:*", count=1000):
        fields = client.hgetall(key)
        version = Version(
            int(fields.pop(ROW_TIME.encode())), int(fields.pop(ROW_RANK.encode())),
            fields.pop(ROW_EVENT_ID.encode()).decode(),
        )
        if key.startswith(row_prefix):
            entity_id = key[len(row_prefix):].decode()
            rows[entity_id] = (version, {k.decode(): v for k, v in fields.items()})
        elif key.startswith(vector_prefix):
            vectors[key[len(vector_prefix):].decode()] = (version, fields[VECTOR_VALUES.encode()])
    return rows, vectors


def read_topic(bootstrap: str, topic: str, partitions: int) -> list[events_pb2.Event]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "kill9-reference",
                         "enable.auto.commit": False})
    events: list[events_pb2.Event] = []
    try:
        for partition in range(partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            consumer.assign([TopicPartition(topic, partition, low)])
            offset = low
            deadline = time.monotonic() + 60
            while offset < high and time.monotonic() < deadline:
                for message in consumer.consume(1000, 1.0):
                    if message.error() is None:
                        events.append(events_pb2.Event.FromString(message.value()))
                        offset = message.offset() + 1
            assert offset >= high, f"partition {partition} read to {offset} of {high}"
    finally:
        consumer.close()
    return events


def start_features(env: dict[str, str], log_path: Path) -> subprocess.Popen:
    log = open(log_path, "ab")  # noqa: SIM115 - kept open for the child's life
    return subprocess.Popen([sys.executable, "-m", "flywheel.features"], env=env,
                            stdout=log, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def test_kill9_mid_stream_then_restart_equals_full_replay(
    names, kafka_bootstrap, redis_url, tmp_path, customer
) -> None:
    spec_path = Path(__file__).resolve().parents[3] / "flywheel.yaml"
    topics = Topics(names.namespace)
    ensure_topics(kafka_bootstrap, [topics.events, topics.events.dlq])
    port = free_port()
    env = {
        **os.environ,
        "FLYWHEEL_NAMESPACE": names.namespace,
        "FLYWHEEL_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "FLYWHEEL_REDIS_URL": redis_url,
        "FLYWHEEL_SPEC_PATH": str(spec_path),
        "FLYWHEEL_LOG_JSON": "false",
        "FLYWHEEL_FEATURES_GRPC_PORT": str(port),
        "FLYWHEEL_FEATURES_METRICS_PORT": "0",
        "FLYWHEEL_FEATURES_SNAPSHOT_DIR": str(tmp_path / "snapshots"),
        "FLYWHEEL_FEATURES_CONSUMER_MAX_BATCH": "200",
    }
    rng = random.Random(99)
    now_ms = int(time.time() * 1000)
    # Out of order, with duplicates: later events are not always newer.
    events = []
    for i in range(EVENTS):
        entity = f"k{rng.randrange(ENTITIES)}"
        events.append(random_event(customer, entity, now_ms - rng.randrange(600_000), rng,
                                   event_id=f"e{i}", with_vector=rng.random() < 0.5))
        if rng.random() < 0.05:
            events.append(events[-1])
    client = redis.Redis.from_url(redis_url)
    keys = KeySpace(f"{names.namespace}:")
    producer = Producer(kafka_bootstrap, client_id="kill9-test")
    first = start_features(env, tmp_path / "features-1.log")
    second = None
    try:
        wait_for_serving(f"127.0.0.1:{port}", 60.0)
        half = len(events) // 2
        for event in events[:half]:
            producer.produce(topics.events, event.entity_id, event)
        assert producer.flush(30) == 0
        # Kill once part, not all, of what was sent is in Redis.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            written = sum(1 for _ in client.scan_iter(match=keys.row_prefix("customer") + "*",
                                                      count=1000))
            if written >= 50:
                break
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        for event in events[half:]:
            producer.produce(topics.events, event.entity_id, event)
        assert producer.flush(30) == 0

        second = start_features(env, tmp_path / "features-2.log")
        wait_for_serving(f"127.0.0.1:{port}", 60.0)
        spec = load_spec(spec_path)
        validator = EventValidator(spec)
        expected = newest_wins(
            read_topic(kafka_bootstrap, topics.events.name, topics.events.partitions),
            accept=lambda event: not validator.problems(event, now_s=time.time()),
            layouts=layouts_of(spec.entities),
        )
        assert len(expected[0]) == ENTITIES
        deadline = time.monotonic() + 90
        state = None
        while time.monotonic() < deadline:
            state = redis_state(client, keys)
            if state == expected:
                break
            time.sleep(0.5)
        assert state is not None
        assert state[0] == expected[0], "rows differ from a full replay"
        assert state[1] == expected[1], "vectors differ from a full replay"
    finally:
        producer.close(5)
        first.kill() if first.poll() is None else None
        if second is not None:
            stop(second)
        client.close()
