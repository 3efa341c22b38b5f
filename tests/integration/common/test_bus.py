"""The Kafka bus against a real broker: typed round trip, retry without advancing, DLQ, interop."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from confluent_kafka import Consumer
from kafka import KafkaProducer
from opentelemetry import context as otel_context

from flywheel.common import tracing
from flywheel.common.kafka import headers as hdr
from flywheel.common.kafka.admin import ensure_topics
from flywheel.common.kafka.consumer import ConsumerWorker
from flywheel.common.kafka.producer import Producer
from flywheel.common.kafka.records import Record
from flywheel.common.kafka.topics import Topics
from flywheel.v1 import events_pb2


def wait_until(predicate, timeout_s: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def event(i: int) -> events_pb2.Event:
    message = events_pb2.Event(event_id=f"ev-{i}", entity_type="customer", entity_id=f"c{i}")
    message.features["f00"].double_value = float(i)
    return message


class Collector:
    """A handler that records what it saw; can be told to fail."""

    def __init__(self, fail_on: set[str] | None = None) -> None:
        self.seen: list[Record] = []
        self.fail_on = fail_on or set()
        self.attempts = 0
        self.lock = threading.Lock()

    def __call__(self, records: list[Record]) -> None:
        with self.lock:
            self.attempts += 1
            if any(r.value.event_id in self.fail_on for r in records):
                raise RuntimeError("handler refused the batch")
            self.seen.extend(records)

    def ids(self) -> list[str]:
        with self.lock:
            return [r.value.event_id for r in self.seen]


@pytest.fixture
def topics(kafka_bootstrap: str, names) -> Topics:
    topics = Topics(names.namespace)
    ensure_topics(kafka_bootstrap, topics.all())
    return topics


@pytest.fixture
def producer(kafka_bootstrap: str):
    producer = Producer(kafka_bootstrap, client_id="test-bus")
    yield producer
    producer.close()


def worker(kafka_bootstrap, group, topics, handler, producer, **kwargs) -> ConsumerWorker:
    return ConsumerWorker(
        bootstrap=kafka_bootstrap,
        group_id=group,
        topics=[topics.events],
        handler=handler,
        dlq_producer=producer,
        **kwargs,
    )


def test_typed_round_trip_carries_protobuf_and_headers(kafka_bootstrap, names, topics, producer):
    caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    async def send_all() -> list:
        # Sent on behalf of a caller's trace: its context travels in every record's headers.
        token = otel_context.attach(tracing.extract({"traceparent": caller}))
        try:
            return await asyncio.gather(
                *(producer.send(topics.events, f"c{i}", event(i)) for i in range(50))
            )
        finally:
            otel_context.detach(token)

    delivered = asyncio.run(send_all())
    assert len(delivered) == 50 and all(d.offset >= 0 for d in delivered)

    collector = Collector()
    consumer = worker(kafka_bootstrap, names.group("round-trip"), topics, collector, producer)
    consumer.start()
    try:
        wait_until(lambda: len(collector.ids()) == 50, what="50 records")
    finally:
        consumer.stop()
    assert sorted(collector.ids()) == sorted(f"ev-{i}" for i in range(50))
    first = collector.seen[0]
    assert isinstance(first.value, events_pb2.Event)
    assert first.value.features["f00"].double_value == float(first.value.entity_id[1:])
    assert first.key == first.value.entity_id.encode()
    assert first.headers[hdr.MESSAGE_TYPE] == "flywheel.v1.Event"
    assert first.headers[hdr.TRACEPARENT] == caller


def test_a_producer_without_its_poll_thread_settles_while_its_owner_waits(
    kafka_bootstrap, topics
):
    """Delivery reports are served by the owner: after queueing, and while waiting."""
    quiet = Producer(kafka_bootstrap, client_id="test-bus-owner-polls", poll_in_background=False)
    try:
        reported: list = []

        async def produce_and_settle() -> None:
            loop = asyncio.get_running_loop()
            done = loop.create_future()

            def on_delivery(error, _message) -> None:
                reported.append(error)
                if len(reported) == 20:
                    loop.call_soon_threadsafe(done.set_result, None)

            records = [(f"c{i}".encode(), event(i).SerializeToString()) for i in range(20)]
            quiet.produce_all(topics.events.name, records, [], on_delivery)
            quiet.serve_reports()
            await quiet.settle(done, 30.0)
            # Nothing left to report: a wait on a future no report settles times out.
            with pytest.raises(TimeoutError):
                await quiet.settle(loop.create_future(), 0.2)

        asyncio.run(produce_and_settle())
        assert reported == [None] * 20
        # The blocking path polls for itself too.
        delivered = quiet.send_and_wait(topics.events.name, "c-last", b"x", [], timeout_s=30.0)
        assert delivered.offset >= 0
    finally:
        quiet.close()


def test_a_full_local_queue_is_waited_out_and_every_record_reported_once(kafka_bootstrap, topics):
    """produce_all goes on where it stopped when the queue had no room: nothing skipped,
    nothing sent twice."""
    small = Producer(kafka_bootstrap, client_id="test-bus-small-queue",
                     extra_config={"queue.buffering.max.messages": 8})
    try:
        reported: list = []
        records = [(f"c{i}".encode(), event(i).SerializeToString()) for i in range(60)]
        small.produce_all(topics.events.name, records, [],
                          lambda error, message: reported.append((error, message.value())))
        assert small.flush(30.0) == 0
        assert [error for error, _ in reported] == [None] * 60
        # Reports come per partition; each record exactly once.
        assert sorted(value for _, value in reported) == sorted(value for _, value in records)
    finally:
        small.close()


def test_a_failing_handler_does_not_advance_the_group(kafka_bootstrap, names, topics, producer):
    producer.send_and_wait(topics.events.name, "c1", topics.events.encode(event(1)),
                           hdr.standard_headers("flywheel.v1.Event"), 10)
    group = names.group("retry")

    failing = Collector(fail_on={"ev-1"})
    consumer = worker(kafka_bootstrap, group, topics, failing, producer)
    consumer.start()
    try:
        wait_until(lambda: failing.attempts >= 2, what="the handler to be retried")
    finally:
        consumer.stop()
    assert failing.ids() == []

    # A restarted consumer of the same group gets the same record again: nothing was skipped.
    healthy = Collector()
    consumer = worker(kafka_bootstrap, group, topics, healthy, producer)
    consumer.start()
    try:
        wait_until(lambda: healthy.ids() == ["ev-1"], what="redelivery after restart")
    finally:
        consumer.stop()


def test_a_poison_record_goes_to_the_dlq_with_headers_and_the_consumer_goes_on(
    kafka_bootstrap, names, topics, producer
):
    name = topics.events.name
    producer.send_and_wait(name, "c1", topics.events.encode(event(1)), [], 10)
    poison = producer.send_and_wait(name, "c2", b"\xff\xfe not a protobuf \x00", [], 10)
    producer.send_and_wait(name, "c3", topics.events.encode(event(3)), [], 10)

    collector = Collector()
    consumer = worker(kafka_bootstrap, names.group("poison"), topics, collector, producer)
    consumer.start()
    try:
        wait_until(lambda: sorted(collector.ids()) == ["ev-1", "ev-3"], what="good records")
    finally:
        consumer.stop()
    assert consumer.dead_lettered == 1

    dlq = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": names.group("dlq-reader"),
                    "auto.offset.reset": "earliest"})
    dlq.subscribe([topics.events.dlq.name])
    try:
        records = []
        deadline = time.monotonic() + 20
        while not records and time.monotonic() < deadline:
            message = dlq.poll(0.5)
            if message is not None and message.error() is None:
                records.append(message)
    finally:
        dlq.close()
    assert len(records) == 1
    dead = records[0]
    headers = hdr.as_dict(dead.headers())
    assert dead.value() == b"\xff\xfe not a protobuf \x00"
    assert dead.key() == b"c2"
    assert headers[hdr.DLQ_SOURCE_TOPIC] == name
    assert headers[hdr.DLQ_SOURCE_PARTITION] == str(poison.partition)
    assert headers[hdr.DLQ_SOURCE_OFFSET] == str(poison.offset)
    assert headers[hdr.DLQ_ERROR_TYPE] == "DecodeError"
    assert "not a flywheel.v1.Event" in headers[hdr.DLQ_ERROR]


def test_an_external_kafka_python_producer_is_read_by_the_project_consumer(
    kafka_bootstrap, names, topics, producer
):
    external = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    try:
        for i in range(5):
            external.send(topics.events.name, key=f"c{i}".encode(),
                          value=event(i).SerializeToString(),
                          headers=[("message-type", b"flywheel.v1.Event")]).get(timeout=20)
    finally:
        external.close(timeout=10)

    collector = Collector()
    consumer = worker(kafka_bootstrap, names.group("interop"), topics, collector, producer)
    consumer.start()
    try:
        wait_until(lambda: len(collector.ids()) == 5, what="the externally produced events")
    finally:
        consumer.stop()
    assert sorted(collector.ids()) == [f"ev-{i}" for i in range(5)]
    assert {r.value.features["f00"].double_value for r in collector.seen} == {0.0, 1.0, 2.0, 3.0, 4.0}
