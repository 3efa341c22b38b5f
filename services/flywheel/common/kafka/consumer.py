"""A consumer worker: polls in its own thread, decodes, hands batches to a handler, and
stores offsets only after the handler succeeded (`enable.auto.offset.store=false`).

Undecodable records go to `<topic>.dlq` with headers naming the error and the source; a
handler that raises is dealt with by the injected error policy. librdkafka's auto-commit
commits only what was stored, so a crash never skips a record (at-least-once); handlers are
idempotent (newer-wins writes, dedup by id) to make the effect exactly once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from flywheel.common.errors import DecodeError
from flywheel.common.kafka import headers as hdr
from flywheel.common.kafka.lag import lag_reporting
from flywheel.common.kafka.producer import Producer
from flywheel.common.kafka.records import (
    ErrorAction,
    ErrorPolicy,
    Record,
    always_retry,
    backoff_s,
)
from flywheel.common.kafka.security import secured
from flywheel.common.kafka.topics import Topic
from flywheel.common.kafka.worker import WorkerThread

log = logging.getLogger("flywheel.kafka.consumer")

Handler = Callable[[list[Record]], None]


class ConsumerWorker(WorkerThread):
    def __init__(
        self,
        *,
        bootstrap: str,
        group_id: str,
        topics: Sequence[Topic],
        handler: Handler,
        dlq_producer: Producer,
        error_policy: ErrorPolicy = always_retry,
        max_batch: int = 500,
        poll_timeout_s: float = 0.2,
        dlq_timeout_s: float = 30.0,
        extra_config: dict[str, Any] | None = None,
        name: str = "consumer",
        follow_all: bool = False,
        start_offsets: Mapping[tuple[str, int], int] | None = None,
    ) -> None:
        """`follow_all`: read every partition of `topics` from the beginning without
        joining `group_id` and without committing (a feed every replica reads whole, such as
        the compacted model-versions topic): the broker never creates the group, so a
        replica that stops, however it stops, leaves none behind. `start_offsets`: where
        to begin in a (topic, partition) instead of its beginning."""
        super().__init__(name)
        self._follow_all = follow_all
        self._start_offsets = dict(start_offsets or {})
        self._topics = {topic.name: topic for topic in topics}
        self._handler = handler
        self._dlq = dlq_producer
        self._policy = error_policy
        self._max_batch = max_batch
        self._poll_timeout_s = poll_timeout_s
        self._dlq_timeout_s = dlq_timeout_s
        self._config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "group.id": group_id,
            "client.id": name,
            "enable.auto.offset.store": False,
            "enable.auto.commit": True,
            "auto.commit.interval.ms": 1000,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "session.timeout.ms": 10000,
            "socket.timeout.ms": 10000,
            **lag_reporting(group_id),
        }
        self._config.update(extra_config or {})
        if follow_all:
            self._config["enable.auto.commit"] = False
        self.processed = 0
        self.dead_lettered = 0

    # -- lifecycle ---------------------------------------------------------------------------

    # -- the loop ----------------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned.set()

    def _run(self) -> None:
        consumer = Consumer(secured(self._config))
        try:
            if self._follow_all:
                self._assign_all(consumer)
            else:
                consumer.subscribe(list(self._topics), on_assign=self._on_assign)
            while not self._stop.is_set():
                messages = consumer.consume(self._max_batch, self._poll_timeout_s)
                if messages:
                    self._process(consumer, messages)
        except _Stopping:
            pass
        except BaseException as error:
            self.failed = error
            log.exception("consumer %s stopped on an error", self._name)
            raise
        finally:
            if not self._follow_all:
                try:
                    consumer.commit(asynchronous=False)
                except Exception:  # noqa: BLE001 - nothing stored since the last commit
                    pass
            consumer.close()

    def _assign_all(self, consumer: Consumer) -> None:
        timeout = float(self._config["socket.timeout.ms"]) / 1000
        partitions = []
        for name in self._topics:
            metadata = consumer.list_topics(name, timeout=timeout).topics[name]
            if metadata.error is not None:
                raise RuntimeError(f"topic {name}: {metadata.error}")
            partitions += [TopicPartition(name, p, self._start_offsets.get((name, p),
                                                                            OFFSET_BEGINNING))
                           for p in metadata.partitions]
        consumer.assign(partitions)
        self.assigned.set()

    def _process(self, consumer: Consumer, messages: list[Message]) -> None:
        good: list[Record] = []
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error: %s", error.str())
                continue
            try:
                good.append(self._decode(message))
            except DecodeError as decode_error:
                self._dead_letter(message, decode_error)
        if good:
            self._handle_with_policy(consumer, good)
        if not self._follow_all:
            self._store(consumer, messages)

    def _decode(self, message: Message) -> Record:
        headers = hdr.as_dict(message.headers())
        topic = self._topics[message.topic()]
        value = topic.decode(message.value(), headers.get(hdr.MESSAGE_TYPE))
        return Record(
            message.topic(),
            message.partition(),
            message.offset(),
            message.key(),
            value,
            headers,
            message.timestamp()[1],
        )

    def _handle_with_policy(self, consumer: Consumer, records: list[Record]) -> None:
        attempt = 0
        while not self._stop.is_set():
            attempt += 1
            try:
                self._handler(records)
                self.processed += len(records)
                return
            except Exception as error:
                action = self._policy(error, attempt)
                log.warning(
                    "handler failed (attempt %d, %s): %s", attempt, action.value, error,
                    extra={"records": len(records)},
                )
                if action is ErrorAction.STOP:
                    raise
                if action is ErrorAction.DEAD_LETTER:
                    self._dead_letter_failing(records)
                    return
                time.sleep(backoff_s(attempt))
        # Stopping mid-retry: leave the batch unstored so it is delivered again.
        raise _Stopping()

    def _dead_letter_failing(self, records: list[Record]) -> None:
        """Re-runs the batch one record at a time; only the records that still fail go to DLQ."""
        for record in records:
            try:
                self._handler([record])
                self.processed += 1
            except Exception as error:  # noqa: BLE001
                self._dead_letter_record(record, error)

    def _store(self, consumer: Consumer, messages: list[Message]) -> None:
        last: dict[tuple[str, int], int] = {}
        for message in messages:
            if message.error() is None:
                last[(message.topic(), message.partition())] = message.offset()
        if last:
            consumer.store_offsets(
                offsets=[TopicPartition(t, p, o + 1) for (t, p), o in last.items()]
            )

    # -- dead letters ------------------------------------------------------------------------

    def _dlq_headers(self, topic: str, partition: int, offset: int, error: Exception,
                     original: list[tuple[str, bytes]] | None) -> list[tuple[str, bytes]]:
        kept = [(k, v) for k, v in original or () if not k.startswith("dlq.") and v is not None]
        return kept + [
            (hdr.DLQ_ERROR, str(error)[:1000].encode()),
            (hdr.DLQ_ERROR_TYPE, type(error).__name__.encode()),
            (hdr.DLQ_SOURCE_TOPIC, topic.encode()),
            (hdr.DLQ_SOURCE_PARTITION, str(partition).encode()),
            (hdr.DLQ_SOURCE_OFFSET, str(offset).encode()),
        ]

    def _dead_letter(self, message: Message, error: Exception) -> None:
        topic = message.topic()
        headers = self._dlq_headers(topic, message.partition(), message.offset(), error,
                                    message.headers())
        self._dlq.send_and_wait(
            self._topics[topic].dlq.name, message.key(), message.value(), headers,
            self._dlq_timeout_s,
        )
        self.dead_lettered += 1
        log.warning("dead-lettered %s[%d]@%d: %s", topic, message.partition(), message.offset(),
                    error)

    def _dead_letter_record(self, record: Record, error: Exception) -> None:
        topic = self._topics[record.topic]
        original = [(k, v.encode()) for k, v in record.headers.items()]
        headers = self._dlq_headers(record.topic, record.partition, record.offset, error, original)
        self._dlq.send_and_wait(topic.dlq.name, record.key, topic.encode(record.value), headers,
                                self._dlq_timeout_s)
        self.dead_lettered += 1
        log.warning("dead-lettered %s[%d]@%d: %s", record.topic, record.partition,
                    record.offset, error)


class _Stopping(Exception):
    """Raised inside the loop when stop was asked during retries; ends the loop quietly."""
