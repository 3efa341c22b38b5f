"""A rebalance storm on the feature store's materializer: while events stream onto the
events topic, members of the feature store's consumer group (ConsumerWorkers running the
production Materializer, each with its own FeatureStore, as separate instances would) join
and leave every two seconds. Redis ends equal to the newest-wins reference computed from
every produced event (lost = 0); redeliveries after a rebalance change nothing."""

from __future__ import annotations

import random
import threading
import time

import redis
import redis.asyncio as aioredis
from confluent_kafka import Consumer, TopicPartition
from reliability_kit import report

from flywheel.bench.workload import random_event
from flywheel.common.dependency import redis_dependency
from flywheel.common.kafka.admin import ensure_topics
from flywheel.common.kafka.consumer import ConsumerWorker
from flywheel.common.kafka.producer import Producer
from flywheel.common.kafka.topics import Topics
from flywheel.common.spec import load_spec
from flywheel.common.validation import EventValidator
from flywheel.features.core import FeatureStore
from flywheel.features.framed import layouts_of
from flywheel.features.keys import (
    ROW_EVENT_ID,
    ROW_RANK,
    ROW_TIME,
    VECTOR_VALUES,
    KeySpace,
)
from flywheel.features.materializer import Materializer, dead_letter_invalid
from flywheel.features.online_store import (
    OnlineStore,
)
from flywheel.features.vector_index import VectorIndex
from flywheel.testing.feature_reference import newest_wins

EVENTS = 18_000
ENTITIES = 600
RATE = 1_500  # events a second: the stream lasts ~12 s
STEP_S = 2.0


def differences(client: redis.Redis, keys: KeySpace, rows: dict, vectors: dict) -> int:
    """Entities whose stored row or vector is not the reference's, plus keys it lacks."""
    wrong = 0
    pipe = client.pipeline(transaction=False)
    order = list(rows)
    for entity_id in order:
        pipe.hgetall(keys.row_prefix("customer") + entity_id)
        pipe.hgetall(keys.vector("customer", entity_id))
    found = pipe.execute()
    for i, entity_id in enumerate(order):
        row, vector = found[2 * i], found[2 * i + 1]
        version, features = rows[entity_id]
        expected_row = {ROW_TIME.encode(): str(version.time_ms).encode(),
                        ROW_RANK.encode(): str(version.rank).encode(),
                        ROW_EVENT_ID.encode(): version.event_id.encode()}
        expected_row.update({name.encode(): value for name, value in features.items()})
        wrong += row != expected_row
        if entity_id in vectors:
            vector_version, values = vectors[entity_id]
            wrong += (vector.get(ROW_EVENT_ID.encode()) != vector_version.event_id.encode()
                      or vector.get(VECTOR_VALUES.encode()) != values)
        else:
            wrong += bool(vector)
    stored = sum(1 for _ in client.scan_iter(match=keys.prefix + "fw:*", count=1000))
    return wrong + max(0, stored - len(rows) - len(vectors))


class Member:
    """One member of the group: the materializer on its own FeatureStore and Redis clients."""

    def __init__(self, name: str, common, spec, dlq: Producer, topics: Topics) -> None:
        self.name = name
        self.redis = redis.Redis.from_url(common.redis_url)
        online = OnlineStore(KeySpace(common.redis_key_prefix), self.redis,
                             aioredis.Redis.from_url(common.redis_url),
                             layouts_of(spec.entities),
                             redis=redis_dependency(common.redis_url, common.redis_timeout_s))
        entity = spec.entity("customer")
        store = FeatureStore(
            EventValidator(spec), online,
            {"customer": VectorIndex(entity.vector.dimension, use_gpu=False,
                                     ivf_min_vectors=entity.vector.ivf_min_vectors)},
        )
        store.vectors_ready = True
        self.worker = ConsumerWorker(
            bootstrap=common.kafka_bootstrap, group_id=common.group_id("flywheel-features"),
            topics=[topics.events], handler=Materializer(store), dlq_producer=dlq,
            error_policy=dead_letter_invalid, max_batch=200, name=name,
        )
        self.worker.start()

    def stop(self) -> None:
        self.worker.stop()
        self.redis.close()


def committed_lag(common, topics: Topics) -> int:
    consumer = Consumer({"bootstrap.servers": common.kafka_bootstrap,
                         "group.id": common.group_id("flywheel-features"),
                         "enable.auto.commit": False})
    try:
        partitions = [TopicPartition(topics.events.name, p) for p in range(topics.events.partitions)]
        lag = 0
        for committed in consumer.committed(partitions, timeout=10):
            _, high = consumer.get_watermark_offsets(committed, timeout=10)
            lag += high - max(committed.offset, 0)
        return lag
    finally:
        consumer.close()


def test_rebalance_storm_on_the_materializer_loses_nothing(common) -> None:
    spec = load_spec(common.spec_path)
    topics = Topics(common.namespace)
    ensure_topics(common.kafka_bootstrap, [topics.events, topics.events.dlq])
    customer = spec.entity("customer")
    rng = random.Random(2024)
    now_ms = int(time.time() * 1000)
    events = []
    for i in range(EVENTS):
        entity_id = f"c{rng.randrange(ENTITIES)}"
        # Times out of order within ten minutes: later events are often older.
        events.append(random_event(customer, entity_id, now_ms - rng.randrange(600_000), rng,
                                   event_id=f"e{i}", with_vector=rng.random() < 0.5))
        if rng.random() < 0.05:
            events.append(events[-1])  # a duplicate: the same event sent twice
    validator = EventValidator(spec)
    assert not any(validator.problems(e, now_s=time.time()) for e in events[:100])
    rows, vectors = newest_wins(events, layouts=layouts_of(spec.entities))

    producer = Producer(common.kafka_bootstrap, client_id="storm-producer")
    dlq = Producer(common.kafka_bootstrap, client_id="storm-dlq")
    done = threading.Event()

    def stream() -> None:
        started = time.monotonic()
        for i, event in enumerate(events):
            producer.produce(topics.events, event.entity_id, event)
            if i % 100 == 99:
                ahead = (i + 1) / RATE - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
        done.set()

    members: dict[str, Member] = {}
    stopped: list[Member] = []
    joins = leaves = 0
    client = redis.Redis.from_url(common.redis_url)
    keys = KeySpace(common.redis_key_prefix)
    storm_rng = random.Random(7)
    try:
        members["m0"] = Member("m0", common, spec, dlq, topics)
        joins += 1
        streamer = threading.Thread(target=stream, name="storm-stream", daemon=True)
        streamer.start()
        serial = 1
        # Join or leave every STEP_S while the stream lasts: 1 to 3 members at a time.
        while not done.is_set():
            time.sleep(STEP_S)
            leave = len(members) == 3 or (len(members) > 1 and storm_rng.random() < 0.5)
            if leave:
                name = storm_rng.choice(sorted(members))
                member = members.pop(name)
                member.stop()
                stopped.append(member)
                leaves += 1
            else:
                name = f"m{serial}"
                serial += 1
                members[name] = Member(name, common, spec, dlq, topics)
                joins += 1
        streamer.join(30)
        assert producer.flush(30) == 0
        storm_ended = time.monotonic()
        deadline = storm_ended + 60
        wrong = differences(client, keys, rows, vectors)
        while wrong and time.monotonic() < deadline:
            time.sleep(0.5)
            wrong = differences(client, keys, rows, vectors)
        converged_s = time.monotonic() - storm_ended
        lag = committed_lag(common, topics)
        while lag and time.monotonic() < deadline:
            time.sleep(0.5)
            lag = committed_lag(common, topics)
    finally:
        for member in members.values():
            member.stop()
        producer.close(5)
        dlq.close(5)
        client.close()
    everyone = stopped + list(members.values())
    processed = sum(m.worker.processed for m in everyone)
    dead_lettered = sum(m.worker.dead_lettered for m in everyone)
    failures = [m.worker.failed for m in everyone if m.worker.failed is not None]
    report(
        "rebalance storm (materializer)", produced=len(events),
        duplicates_sent=len(events) - EVENTS, entities=len(rows),
        vectors=len(vectors), joins=joins, leaves=leaves,
        processed_per_member={m.name: m.worker.processed for m in everyone},
        processed=processed,
        redelivered=processed - len(events), dead_lettered=dead_lettered,
        converged_after_stream_s=f"{converged_s:.1f}", lost=wrong, committed_lag=lag,
    )
    assert not failures, failures
    assert joins + leaves >= 5, "the storm was too short to mean anything"
    assert wrong == 0, f"{wrong} entities differ from the newest-wins reference"
    assert dead_lettered == 0
    assert processed >= len(events)  # everything was handled at least once
    assert lag == 0, f"committed offsets lag the topic end by {lag}"
