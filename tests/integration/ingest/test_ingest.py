"""Ingest against the real broker: good events published (acks=all) even beside bad ones,
rejections name their field, a broker that is down gives UNAVAILABLE within the deadline."""

from __future__ import annotations

import asyncio
import math
import random
import time

import grpc
import pytest
from confluent_kafka import Consumer, TopicPartition

from flywheel.bench.workload import random_event
from flywheel.common.grpc.client import aio_channel, health_status
from flywheel.common.kafka.topics import Topics
from flywheel.infra.ports import free_port
from flywheel.ingest.app import IngestApp
from flywheel.ingest.settings import IngestSettings
from flywheel.v1 import events_pb2, ingest_pb2, ingest_pb2_grpc


def read_events(bootstrap: str, topic: str, count: int, timeout_s: float = 30.0) -> list:
    """(key, headers, Event) of the first `count` records of the topic (all partitions)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "ingest-test-reader",
                         "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(3)])
        out = []
        deadline = time.monotonic() + timeout_s
        while len(out) < count and time.monotonic() < deadline:
            for message in consumer.consume(500, 0.5):
                if message.error() is None:
                    out.append((message.key().decode(), dict(message.headers() or []),
                                events_pb2.Event.FromString(message.value())))
        return out
    finally:
        consumer.close()


def _event(customer, entity_id: str, event_id: str = "", seed: int = 0) -> events_pb2.Event:
    return random_event(customer, entity_id, int(time.time() * 1000) - 1000,
                        random.Random(seed), event_id=event_id)


async def test_good_events_are_published_beside_bad_ones(ingest, customer, common) -> None:
    bad = _event(customer, "b1", event_id="bad-1")
    bad.features["f00"].double_value = math.nan
    events = [_event(customer, "a1", event_id="given-id"), bad, _event(customer, "a2")]
    caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    reply = await ingest.Ingest(ingest_pb2.IngestRequest(events=events), timeout=10,
                                metadata=(("traceparent", caller),))
    assert (reply.accepted_count, reply.rejected_count) == (2, 1)
    assert reply.accepted_event_ids[0] == "given-id"
    generated = reply.accepted_event_ids[1]
    assert len(generated) == 32 and int(generated, 16) >= 0
    [rejection] = reply.rejections
    assert (rejection.index, rejection.event_id, rejection.field) == (1, "bad-1", "features.f00")

    records = await asyncio.to_thread(
        read_events, common.kafka_bootstrap, Topics(common.namespace).events.name, 2
    )
    by_key = {key: (headers, event) for key, headers, event in records}
    assert set(by_key) == {"a1", "a2"}
    headers, event = by_key["a1"]
    assert headers["message-type"] == b"flywheel.v1.Event"
    # The caller's trace travels on in the record (tracing off here: nothing else is made).
    assert headers["request-id"] and headers["traceparent"] == caller.encode()
    assert event == events[0]
    assert by_key["a2"][1].event_id == generated


async def test_stream_counts_and_indexes_across_the_whole_stream(ingest, customer) -> None:
    async def stream():
        for batch in range(3):
            events = [_event(customer, f"s{batch}-{i}", seed=i) for i in range(100)]
            if batch == 1:
                events[10].entity_id = ""
            if batch == 2:
                events[99].features["visits"].string_value = "many"
            yield ingest_pb2.IngestStreamRequest(events=events)

    reply = await ingest.IngestStream(stream(), timeout=30)
    assert (reply.accepted_count, reply.rejected_count) == (298, 2)
    assert reply.batches == 3
    assert [(r.index, r.field) for r in reply.rejections] == [
        (110, "entity_id"), (299, "features.visits")
    ]


def _with(customer, change) -> events_pb2.Event:
    event = _event(customer, "m1", event_id="m")
    change(event)
    return event


@pytest.mark.parametrize(
    ("case", "change", "field"),
    [
        ("no entity type", lambda e: setattr(e, "entity_type", ""), "entity_type"),
        ("unknown entity type", lambda e: setattr(e, "entity_type", "robot"), "entity_type"),
        ("no entity id", lambda e: setattr(e, "entity_id", ""), "entity_id"),
        ("unknown feature", lambda e: e.features["zz"].SetInParent(), "features.zz"),
        ("wrong type", lambda e: setattr(e.features["f10"], "bool_value", True), "features.f10"),
        ("NaN", lambda e: setattr(e.features["f11"], "double_value", math.nan), "features.f11"),
        ("Inf", lambda e: setattr(e.features["f12"], "double_value", math.inf), "features.f12"),
        ("no event time", lambda e: e.ClearField("event_time"), "event_time"),
        ("far future", lambda e: e.event_time.FromSeconds(int(time.time()) + 86_400),
         "event_time"),
        ("long vector", lambda e: e.vector.values.extend([1.0]), "vector"),
        ("Inf in vector", lambda e: e.vector.values.__setitem__(1, math.inf), "vector"),
    ],
)
async def test_bad_event_matrix(ingest, customer, case, change, field) -> None:
    reply = await ingest.Ingest(
        ingest_pb2.IngestRequest(events=[_with(customer, change)]), timeout=10
    )
    assert reply.accepted_count == 0, case
    [rejection] = reply.rejections
    assert (rejection.index, rejection.event_id, rejection.field) == (0, "m", field), case
    assert rejection.reason, case


async def test_empty_requests_are_invalid(ingest) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await ingest.Ingest(ingest_pb2.IngestRequest(), timeout=10)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.value.details() == "events is empty"

    async def nothing():
        yield ingest_pb2.IngestStreamRequest()

    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await ingest.IngestStream(nothing(), timeout=10)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "events" in failure.value.details()


async def test_broker_down_gives_unavailable_within_the_deadline(common, customer) -> None:
    dead = f"127.0.0.1:{free_port()}"
    common = common.model_copy(update={"kafka_bootstrap": dead, "kafka_timeout_s": 2.0})
    app = IngestApp(common, IngestSettings(grpc_port=0, metrics_port=0))
    await app.start()
    channel = aio_channel(app.target)
    try:
        assert await asyncio.to_thread(health_status, app.target) == "NOT_SERVING"
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await stub.Ingest(ingest_pb2.IngestRequest(events=[_event(customer, "d1")]),
                              timeout=2.0)
        elapsed = time.monotonic() - started
        assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "Kafka" in failure.value.details()
        assert elapsed < 2.0
    finally:
        await channel.close()
        await app.stop()
