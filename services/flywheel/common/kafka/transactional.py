"""Exactly-once consume-transform-produce on Kafka transactions.

One worker thread owns a read_committed consumer (auto-commit off) and a transactional
producer whose `transactional.id` is stable per instance, so a restarted instance fences its
dead predecessor and aborts whatever it left open. Per batch:

    begin_transaction -> processor(records, output) -> send_offsets_to_transaction
    (consumer positions + group metadata) -> commit_transaction

On any failure the transaction is aborted and the consumer seeks back to the last committed
positions, so the batch is processed again. Side effects outside Kafka (Redis) are not undone
by an abort: the processor is told about every reset through `on_reset(positions, epoch)`, and
must treat state written by an earlier epoch at or past those positions as never written (see
`flywheel.feedback.join` for the pattern). Undecodable records go to `<topic>.dlq` inside the
same transaction, so they too are dead-lettered exactly once.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka import Producer as _Producer
from google.protobuf.message import Message as ProtoMessage

from flywheel.common.errors import DecodeError
from flywheel.common.kafka import headers as hdr
from flywheel.common.kafka.headers import Headers, standard_headers
from flywheel.common.kafka.lag import lag_reporting
from flywheel.common.kafka.records import Record, backoff_s
from flywheel.common.kafka.security import secured
from flywheel.common.kafka.topics import Topic
from flywheel.common.kafka.worker import WorkerThread

log = logging.getLogger("flywheel.kafka.transactional")

# (topic, partition) -> the next offset to read
Positions = dict[tuple[str, int], int]


@dataclass
class TxOutput:
    """What a processor produces inside the current transaction."""

    producer: _Producer
    produced: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    def produce(
        self, topic: Topic, key: str | bytes | None, message: ProtoMessage,
        headers: Headers | None = None,
    ) -> None:
        self.produce_raw(
            topic.name, key, topic.encode(message),
            headers if headers is not None else standard_headers(topic.type_name),
        )

    def produce_raw(self, topic: str, key: str | bytes | None, value: bytes | None,
                    headers: Headers) -> None:
        key_bytes = key.encode() if isinstance(key, str) else key
        while True:
            try:
                self.producer.produce(topic, value=value, key=key_bytes, headers=headers)
                break
            except BufferError:
                self.producer.poll(0.05)
        self.produced += 1
        self.counts[topic] = self.counts.get(topic, 0) + 1


Processor = Callable[[list[Record], TxOutput], None]
ResetHook = Callable[[Positions, str], None]


class TransactionalWorker(WorkerThread):
    stop_timeout_s = 15.0

    def __init__(
        self,
        *,
        bootstrap: str,
        group_id: str,
        transactional_id: str,
        topics: Sequence[Topic],
        processor: Processor,
        on_reset: ResetHook | None = None,
        max_batch: int = 500,
        poll_timeout_s: float = 0.2,
        kafka_timeout_s: float = 30.0,
        static_member_id: str | None = None,
        name: str = "transactional",
    ) -> None:
        super().__init__(name)
        self._topics = {topic.name: topic for topic in topics}
        self._processor = processor
        self._on_reset = on_reset
        self._max_batch = max_batch
        self._poll_timeout_s = poll_timeout_s
        self._timeout_s = kafka_timeout_s
        self._consumer_config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "group.id": group_id,
            "client.id": name,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            # Range keeps partition i of every input topic on one member: co-partitioned joins.
            "partition.assignment.strategy": "range",
            "session.timeout.ms": 10000,
            "socket.timeout.ms": 10000,
            **lag_reporting(group_id),
        }
        if static_member_id:
            # A restarted instance takes its partitions back at once instead of waiting
            # for the dead member's session to time out.
            self._consumer_config["group.instance.id"] = static_member_id
        self._producer_config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "client.id": f"{name}-producer",
            "transactional.id": transactional_id,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            "transaction.timeout.ms": 60000,
            "socket.timeout.ms": 10000,
        }
        self.epoch = ""
        self.committed_batches = 0
        self.aborted_batches = 0
        self.processed = 0
        self.dead_lettered = 0
        self._positions: Positions = {}
        self._consumer: Consumer | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    # -- assignment and resets ---------------------------------------------------------------

    def _committed(self, consumer: Consumer, partitions: list[TopicPartition]) -> Positions:
        if not partitions:
            return {}
        committed = consumer.committed(
            [TopicPartition(tp.topic, tp.partition) for tp in partitions], timeout=self._timeout_s
        )
        return {(tp.topic, tp.partition): max(tp.offset, 0) for tp in committed}

    def _reset(self, positions: Positions) -> None:
        self._positions = dict(positions)
        self.epoch = uuid.uuid4().hex[:16]
        if self._on_reset:
            self._on_reset(dict(positions), self.epoch)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Eager range assignment: `partitions` is the member's whole assignment.
        self._reset(self._committed(consumer, partitions))
        consumer.assign(
            [TopicPartition(t, p, o) for (t, p), o in self._positions.items()]
        )
        if partitions:
            self.assigned.set()
        log.info("assigned %d partitions (epoch %s)", len(partitions), self.epoch)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned.clear()
        self._positions = {}

    def _rewind(self, consumer: Consumer) -> None:
        """After an abort: back to the last committed positions, under a new epoch."""
        positions = dict(self._positions)
        for (topic, partition), offset in positions.items():
            try:
                consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as error:
                # Not fetching yet: re-assigning at the offsets does the same.
                log.debug("seek %s[%d] failed (%s); re-assigning", topic, partition, error)
                consumer.assign([TopicPartition(t, p, o) for (t, p), o in positions.items()])
                break
        self._reset(positions)

    # -- the loop ----------------------------------------------------------------------------

    def _run(self) -> None:
        producer = _Producer(secured(self._producer_config))
        consumer = Consumer(secured(self._consumer_config))
        self._consumer = consumer
        try:
            producer.init_transactions(self._timeout_s)
            consumer.subscribe(list(self._topics), on_assign=self._on_assign,
                               on_revoke=self._on_revoke, on_lost=self._on_revoke)
            failures = 0
            while not self._stop.is_set():
                messages = consumer.consume(self._max_batch, self._poll_timeout_s)
                messages = [m for m in messages if not self._skip(m)]
                if not messages:
                    continue
                try:
                    self._transact(producer, consumer, messages)
                    failures = 0
                except KafkaException as error:
                    kafka_error = error.args[0]
                    if kafka_error.fatal():
                        raise
                    failures += 1
                    self._abort(producer, consumer, error, failures)
                except Exception as error:  # noqa: BLE001 - abort, rewind, retry
                    failures += 1
                    self._abort(producer, consumer, error, failures)
        except BaseException as error:
            self.failed = error
            log.exception("transactional worker %s stopped on an error", self._name)
            raise
        finally:
            self.assigned.clear()
            consumer.close()
            producer.flush(1.0)

    def _skip(self, message: Message) -> bool:
        error = message.error()
        if error is None:
            return False
        if error.code() != KafkaError._PARTITION_EOF:
            log.warning("consumer error: %s", error.str())
        return True

    def _transact(self, producer: _Producer, consumer: Consumer, messages: list[Message]) -> None:
        records: list[Record] = []
        output = TxOutput(producer)
        producer.begin_transaction()
        for message in messages:
            try:
                records.append(self._decode(message))
            except DecodeError as error:
                self._dead_letter(output, message, error)
        if records:
            self._processor(records, output)
        positions = self._batch_end(messages)
        offsets = [TopicPartition(t, p, o) for (t, p), o in positions.items()]
        producer.send_offsets_to_transaction(
            offsets, consumer.consumer_group_metadata(), self._timeout_s
        )
        producer.commit_transaction(self._timeout_s)
        self._positions.update(positions)
        self.committed_batches += 1
        self.processed += len(records)
        self.dead_lettered += output.counts.get("__dlq__", 0)

    def _batch_end(self, messages: list[Message]) -> Positions:
        last: Positions = {}
        for message in messages:
            last[(message.topic(), message.partition())] = message.offset() + 1
        return last

    def _abort(self, producer: _Producer, consumer: Consumer, error: BaseException,
               failures: int) -> None:
        self.aborted_batches += 1
        log.warning("transaction failed (attempt %d): %s; aborting and rewinding", failures, error)
        try:
            producer.abort_transaction(self._timeout_s)
        except KafkaException as abort_error:
            if abort_error.args[0].fatal():
                raise
            log.warning("abort failed: %s", abort_error)
        self._rewind(consumer)
        self._stop.wait(backoff_s(failures))

    # -- decoding and dead letters -----------------------------------------------------------

    def _decode(self, message: Message) -> Record:
        headers = hdr.as_dict(message.headers())
        topic = self._topics[message.topic()]
        value = topic.decode(message.value(), headers.get(hdr.MESSAGE_TYPE))
        return Record(message.topic(), message.partition(), message.offset(), message.key(),
                      value, headers, message.timestamp()[1])

    def _dead_letter(self, output: TxOutput, message: Message, error: Exception) -> None:
        topic = message.topic()
        kept = [(k, v) for k, v in message.headers() or () if not k.startswith("dlq.") and v]
        headers = kept + [
            (hdr.DLQ_ERROR, str(error)[:1000].encode()),
            (hdr.DLQ_ERROR_TYPE, type(error).__name__.encode()),
            (hdr.DLQ_SOURCE_TOPIC, topic.encode()),
            (hdr.DLQ_SOURCE_PARTITION, str(message.partition()).encode()),
            (hdr.DLQ_SOURCE_OFFSET, str(message.offset()).encode()),
        ]
        output.produce_raw(self._topics[topic].dlq.name, message.key(), message.value(), headers)
        output.counts["__dlq__"] = output.counts.get("__dlq__", 0) + 1
        log.warning("dead-lettered %s[%d]@%d: %s", topic, message.partition(), message.offset(),
                    error)

