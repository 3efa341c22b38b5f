"""The idempotent producer (acks=all) shared by every service.

confluent-kafka calls delivery callbacks from `poll`; a daemon thread polls so that callers
never have to. `send` bridges a delivery report into an asyncio future, so a gRPC handler can
answer only once Kafka has durably acknowledged the record.

A producer made with `poll_in_background=False` has no such thread: its owner serves the
reports on its own event loop (`serve_reports` after queueing, `settle` while waiting). Ingest
does this because a thread running one Python callback per record fights the event loop for
the GIL on every report, which cost it about a microsecond per event.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka import Message as KafkaMessage
from confluent_kafka import Producer as _Producer
from google.protobuf.message import Message

from flywheel.common.errors import ResourceExhausted, Unavailable
from flywheel.common.kafka.headers import Headers, standard_headers
from flywheel.common.kafka.security import secured
from flywheel.common.kafka.topics import Topic

log = logging.getLogger("flywheel.kafka.producer")


@dataclass(frozen=True)
class Delivered:
    topic: str
    partition: int
    offset: int


def _key_bytes(key: str | bytes | None) -> bytes | None:
    return key.encode() if isinstance(key, str) else key


class Producer:
    def __init__(
        self,
        bootstrap: str,
        *,
        client_id: str,
        delivery_timeout_s: float = 30.0,
        extra_config: dict[str, Any] | None = None,
        poll_in_background: bool = True,
    ) -> None:
        config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "client.id": client_id,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            # Bounded: a broker that stays down fails the delivery instead of hanging forever.
            "message.timeout.ms": int(delivery_timeout_s * 1000),
            "socket.timeout.ms": 10000,
        }
        config.update(extra_config or {})
        self._producer = _Producer(secured(config))
        self._closed = threading.Event()
        self._poller: threading.Thread | None = None
        if poll_in_background:
            self._poller = threading.Thread(
                target=self._poll_loop, name=f"{client_id}-poll", daemon=True
            )
            self._poller.start()

    def _poll_loop(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(0.05)

    @property
    def raw(self) -> _Producer:
        return self._producer

    def serve_reports(self) -> int:
        """Runs the delivery callbacks that are ready, on the calling thread; never waits."""
        return self._producer.poll(0)

    async def settle(self, future: asyncio.Future[Any], timeout_s: float) -> None:
        """Waits at most `timeout_s` (TimeoutError after) for a future that delivery callbacks
        settle. Without the background thread, the reports are served meanwhile by a worker
        thread, 50 ms at a time, only while someone waits."""
        if self._poller is not None:
            await asyncio.wait_for(asyncio.shield(future), timeout_s)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not future.done():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError
            await asyncio.to_thread(self._producer.poll, min(0.05, remaining))
            # The callbacks settle futures through call_soon_threadsafe: let them run.
            await asyncio.sleep(0)
        future.result()

    def produce_raw(
        self,
        topic: str,
        key: str | bytes | None,
        value: bytes | None,
        headers: Headers,
        on_delivery: Any = None,
        queue_wait_s: float = 5.0,
    ) -> None:
        """Queues one record; waits up to `queue_wait_s` for room when the local queue is full."""
        deadline = time.monotonic() + queue_wait_s
        while True:
            try:
                self._producer.produce(
                    topic, value=value, key=_key_bytes(key), headers=headers, on_delivery=on_delivery
                )
                return
            except BufferError:
                if time.monotonic() >= deadline:
                    raise ResourceExhausted("producer queue is full; retry later") from None
                time.sleep(0.005)
            except KafkaException as error:
                raise Unavailable(f"cannot produce to {topic}: {error}") from None

    def produce_all(
        self,
        topic: str,
        records: Sequence[tuple[bytes, bytes]],
        headers: Headers,
        on_delivery: Any,
        queue_wait_s: float = 5.0,
    ) -> None:
        """Queues (key, value) records that share headers and a delivery callback, one call
        into the client per record and nothing else. When the local queue stays full for
        `queue_wait_s` without progress, or Kafka refuses, the records never queued are
        reported failed to `on_delivery` at once (each record gets exactly one report), then
        ResourceExhausted or Unavailable is raised."""
        produce = self._producer.produce
        queued = 0
        deadline = time.monotonic() + queue_wait_s
        try:
            while queued < len(records):
                before = queued
                try:
                    for key, value in islice(records, queued, None) if queued else records:
                        produce(topic, value, key, on_delivery=on_delivery, headers=headers)
                        queued += 1
                except BufferError:
                    now = time.monotonic()
                    if queued > before:
                        deadline = now + queue_wait_s
                    elif now >= deadline:
                        raise ResourceExhausted("producer queue is full; retry later") from None
                    time.sleep(0.005)
        except KafkaException as error:
            raise Unavailable(f"cannot produce to {topic}: {error}") from None
        finally:
            for _ in range(len(records) - queued):
                on_delivery(_NotQueued(), None)

    def produce(
        self,
        topic: Topic,
        key: str | bytes | None,
        message: Message,
        *,
        headers: Headers | None = None,
        on_delivery: Any = None,
    ) -> None:
        self.produce_raw(
            topic.name,
            key,
            topic.encode(message),
            headers if headers is not None else standard_headers(topic.type_name),
            on_delivery,
        )

    def send(
        self,
        topic: Topic,
        key: str | bytes | None,
        message: Message,
        *,
        headers: Headers | None = None,
    ) -> asyncio.Future[Delivered]:
        """Queues the record; the returned future resolves when Kafka acknowledged it."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Delivered] = loop.create_future()

        def settle(error: KafkaError | None, record: KafkaMessage) -> None:
            loop.call_soon_threadsafe(_settle_future, future, error, record)

        self.produce(topic, key, message, headers=headers, on_delivery=settle)
        return future

    def send_and_wait(
        self,
        topic: str,
        key: str | bytes | None,
        value: bytes | None,
        headers: Headers,
        timeout_s: float,
    ) -> Delivered:
        """Blocking produce for worker threads (e.g. the DLQ): returns once acknowledged."""
        done = threading.Event()
        outcome: list[Any] = []

        def settle(error: KafkaError | None, record: KafkaMessage) -> None:
            outcome.append((error, record))
            done.set()

        self.produce_raw(topic, key, value, headers, on_delivery=settle)
        if self._poller is None:
            deadline = time.monotonic() + timeout_s
            while not done.is_set() and time.monotonic() < deadline:
                self._producer.poll(min(0.05, max(0.0, deadline - time.monotonic())))
        if not done.wait(timeout_s if self._poller is not None else 0):
            raise Unavailable(f"Kafka did not acknowledge a record on {topic} within {timeout_s}s")
        error, record = outcome[0]
        if error is not None:
            raise Unavailable(f"delivery to {topic} failed: {error.str()}")
        return Delivered(record.topic(), record.partition(), record.offset())

    def flush(self, timeout_s: float) -> int:
        return self._producer.flush(timeout_s)

    def close(self, timeout_s: float = 10.0) -> None:
        remaining = self._producer.flush(timeout_s)
        if remaining:
            log.warning("closing with %d undelivered records", remaining)
        self._closed.set()
        if self._poller is not None:
            self._poller.join(timeout=1.0)


def _settle_future(
    future: asyncio.Future[Delivered], error: KafkaError | None, record: KafkaMessage
) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(Unavailable(f"Kafka refused the record: {error.str()}"))
    else:
        future.set_result(Delivered(record.topic(), record.partition(), record.offset()))


class _NotQueued:
    """The delivery report of a record that never reached the client's queue."""

    def str(self) -> str:
        return "not queued"
