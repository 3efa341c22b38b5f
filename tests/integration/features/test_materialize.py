"""Events through ingest (batches and stream) and straight onto the topic end up in the
online store: newest value wins, duplicates change nothing."""

from __future__ import annotations

import asyncio
import random
import time

import grpc
import pytest
from kafka import KafkaProducer

from flywheel.bench.workload import random_event
from flywheel.common.kafka.topics import Topics
from flywheel.common.validation import event_time_ms, to_python
from flywheel.v1 import events_pb2, features_pb2, ingest_pb2

ENTITIES = 10_000
BATCH = 500


def expected_row(event: events_pb2.Event, names: list[str]) -> list:
    return [to_python(event.features[n]) if n in event.features else None for n in names]


async def read_all(features, entity_ids: list[str], chunk: int = 2_000) -> dict:
    rows = {}
    for start in range(0, len(entity_ids), chunk):
        reply = await features.GetOnlineFeatures(
            features_pb2.GetOnlineFeaturesRequest(
                entity_type="customer", entity_ids=entity_ids[start:start + chunk]
            ),
            timeout=10,
        )
        for entity in reply.entities:
            rows[entity.entity_id] = entity
    return rows


def matches(entity: features_pb2.EntityFeatures, event: events_pb2.Event, names: list[str]) -> bool:
    return (
        entity.status == features_pb2.FEATURE_STATUS_FOUND
        and entity.event_time.ToMilliseconds() == event_time_ms(event)
        and [to_python(v) for v in entity.values] == expected_row(event, names)
    )


async def test_ten_thousand_events_through_ingest_are_served(
    ingest, features, customer, poll
) -> None:
    rng = random.Random(7)
    names = customer.feature_names
    now_ms = int(time.time() * 1000)
    events = [
        random_event(customer, f"c{i:05d}", now_ms - 60_000 + i % 1000, rng)
        for i in range(ENTITIES)
    ]
    half = ENTITIES // 2
    for start in range(0, half, BATCH):
        reply = await ingest.Ingest(
            ingest_pb2.IngestRequest(events=events[start:start + BATCH]), timeout=30
        )
        assert reply.accepted_count == BATCH and not reply.rejections

    async def stream():
        for start in range(half, ENTITIES, BATCH):
            yield ingest_pb2.IngestStreamRequest(events=events[start:start + BATCH])

    reply = await ingest.IngestStream(stream(), timeout=60)
    assert reply.accepted_count == ENTITIES - half and not reply.rejections
    assert reply.batches == (ENTITIES - half) // BATCH

    ids = [e.entity_id for e in events]
    by_id = {e.entity_id: e for e in events}

    async def all_served():
        rows = await read_all(features, ids)
        return all(matches(rows[i], by_id[i], names) for i in ids)

    await poll(all_served, 90.0, "10,000 entities materialized")


async def test_out_of_order_newest_wins_and_duplicates_change_nothing(
    ingest, features, customer, poll
) -> None:
    rng = random.Random(11)
    names = customer.feature_names
    now_ms = int(time.time() * 1000)
    newest = [random_event(customer, f"o{i}", now_ms - 1_000, rng, event_id=f"new{i}")
              for i in range(50)]
    older = [random_event(customer, f"o{i}", now_ms - 50_000, rng, event_id=f"old{i}")
             for i in range(50)]
    # The newest first, then older ones, then the newest again (duplicates).
    for batch in (newest, older, newest):
        reply = await ingest.Ingest(ingest_pb2.IngestRequest(events=batch), timeout=30)
        assert reply.accepted_count == len(batch)

    # A marker after everything: once it is served, everything before it on its partition is.
    marker_ids = [f"o{i}" for i in range(50)]
    by_id = {e.entity_id: e for e in newest}

    async def newest_served():
        rows = await read_all(features, marker_ids)
        return all(matches(rows[i], by_id[i], names) for i in marker_ids)

    await poll(newest_served, 60.0, "newest values served")

    # Written again directly: every row is stale (older or the same event).
    reply = await features.WriteFeatures(
        features_pb2.WriteFeaturesRequest(rows=older + newest), timeout=10
    )
    assert (reply.written_count, reply.stale_count) == (0, 100)
    rows = await read_all(features, marker_ids)
    assert all(matches(rows[i], by_id[i], names) for i in marker_ids)


def produce_externally(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    """What an external producer does: kafka-python, no headers, acks=all."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for key, value in records:
            producer.send(topic, key=key, value=value)
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=10)


async def test_events_from_an_external_kafka_producer_are_materialized(
    features, features_app, customer, kafka_bootstrap, poll
) -> None:
    rng = random.Random(5)
    now_ms = int(time.time() * 1000)
    events = [random_event(customer, f"x{i}", now_ms, rng, event_id=f"x{i}") for i in range(200)]
    poison = random_event(customer, "bad", now_ms, rng, event_id="bad")
    poison.features["no_such_feature"].double_value = 1.0
    topic = Topics(features_app.common.namespace).events.name
    records = [(e.entity_id.encode(), e.SerializeToString()) for e in events[:100]]
    records.append((b"bad", poison.SerializeToString()))
    records += [(e.entity_id.encode(), e.SerializeToString()) for e in events[100:]]
    records.append((b"junk", b"\xff\xfe not protobuf"))
    await asyncio.to_thread(produce_externally, kafka_bootstrap, topic, records)

    ids = [e.entity_id for e in events]
    by_id = {e.entity_id: e for e in events}
    names = customer.feature_names

    async def served():
        rows = await read_all(features, ids)
        return all(matches(rows[i], by_id[i], names) for i in ids)

    await poll(served, 60.0, "externally produced events materialized")

    async def dead_lettered():
        return features_app.consumer.dead_lettered >= 2

    await poll(dead_lettered, 30.0, "poison records dead-lettered")
    rows = await read_all(features, ["bad"])
    assert rows["bad"].status == features_pb2.FEATURE_STATUS_NOT_FOUND


async def test_feature_subset_in_requested_order(features, customer) -> None:
    rng = random.Random(3)
    event = random_event(customer, "s1", int(time.time() * 1000) - 5, rng, event_id="s1")
    reply = await features.WriteFeatures(features_pb2.WriteFeaturesRequest(rows=[event]), timeout=10)
    assert reply.written_count == 1
    wanted = ["visits", "f03", "segment", "f00"]
    got = await features.GetOnlineFeatures(
        features_pb2.GetOnlineFeaturesRequest(
            entity_type="customer", entity_ids=["s1", "missing"], feature_names=wanted
        ),
        timeout=10,
    )
    assert list(got.feature_names) == wanted
    found, missing = got.entities
    assert found.status == features_pb2.FEATURE_STATUS_FOUND
    assert [to_python(v) for v in found.values] == expected_row(event, wanted)
    assert found.event_time.ToMilliseconds() == event_time_ms(event)
    assert missing.entity_id == "missing"
    assert missing.status == features_pb2.FEATURE_STATUS_NOT_FOUND
    assert [v.WhichOneof("kind") for v in missing.values] == [None] * 4

    schema = await features.GetFeatureSchema(
        features_pb2.GetFeatureSchemaRequest(entity_type="customer"), timeout=5
    )
    assert [f.name for f in schema.features] == customer.feature_names
    assert schema.vector_dimension == 8
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await features.GetFeatureSchema(
            features_pb2.GetFeatureSchemaRequest(entity_type="nope"), timeout=5
        )
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "entity_type" in failure.value.details()
