"""The demo's bookkeeping check: was anything the mesh acknowledged lost on the way?

Two losses count. An event ingest accepted whose customer the feature store cannot return,
and a label feedback accepted that never became a labeled example on the labeled topic
(read from its beginning, each prediction id counted, so duplicates show up as well).
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from flywheel.common.kafka.security import secured
from flywheel.common.kafka.topics import Topics

AUDIT_CHUNK = 500


@dataclass(frozen=True)
class LabelAudit:
    expected: int
    found: int
    missing: list[str]
    duplicated: int


def read_labeled(
    bootstrap: str, namespace: str, expected: Iterable[str], timeout_s: float,
    stopped: Callable[[], bool] = lambda: False,
) -> LabelAudit:
    """Reads the labeled topic until every expected prediction id was seen (or the timeout
    passed: the join may still be catching up; or ``stopped()``: the run was abandoned).
    Blocking; run it in a thread."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    wanted = set(expected)
    topic = Topics(namespace).labeled
    consumer = Consumer(secured({
        "bootstrap.servers": bootstrap,
        "group.id": f"flywheel-demo-audit-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        "socket.timeout.ms": 10000,
    }))
    seen: Counter[str] = Counter()
    try:
        metadata = consumer.list_topics(topic.name, timeout=10.0)
        partitions = sorted(metadata.topics[topic.name].partitions)
        consumer.assign([TopicPartition(topic.name, p, OFFSET_BEGINNING) for p in partitions])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not wanted.issubset(seen) and not stopped():
            for message in consumer.consume(num_messages=2000, timeout=0.5):
                if message.error() is not None:
                    continue
                example = topic.decode(message.value())
                seen[example.prediction_id] += 1
    finally:
        consumer.close()
    missing = sorted(wanted.difference(seen))
    duplicated = sum(1 for pid in wanted if seen[pid] > 1)
    return LabelAudit(len(wanted), len(wanted) - len(missing), missing, duplicated)


def chunks(items: list[str], size: int = AUDIT_CHUNK) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def read_rollbacks(bootstrap: str, namespace: str, model: str, since_ms: int,
                   timeout_s: float = 10.0) -> list[dict[str, int | str]]:
    """The rollbacks the mesh announced for `model` since `since_ms`: every ROLLED_BACK on
    flywheel.model-versions.v1 (the live gate's, and a refused version's alias returning),
    as {"at_ms", "from", "to", "reason"}. Read from the announcements, not guessed from the
    versions that answered: around a swap, requests already in flight are still answered by
    the old version, which is no rollback. Blocking; run it in a thread."""
    from confluent_kafka import Consumer, TopicPartition

    from flywheel.v1 import events_pb2

    topic = Topics(namespace).model_versions
    consumer = Consumer(secured({
        "bootstrap.servers": bootstrap,
        "group.id": f"flywheel-demo-announcements-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "socket.timeout.ms": 10000,
    }))
    found: list[dict[str, int | str]] = []
    try:
        metadata = consumer.list_topics(topic.name, timeout=timeout_s)
        partitions = sorted(metadata.topics[topic.name].partitions)
        starts = consumer.offsets_for_times(
            [TopicPartition(topic.name, p, since_ms) for p in partitions], timeout=timeout_s)
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic.name, p),
                                                  timeout=timeout_s)[1] for p in partitions}
        wanted = [tp for tp in starts if tp.offset >= 0 and tp.offset < ends[tp.partition]]
        consumer.assign(wanted)
        remaining = {tp.partition for tp in wanted}
        deadline = time.monotonic() + timeout_s
        while remaining and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=500, timeout=0.5):
                if message.error() is not None:
                    continue
                if message.offset() >= ends[message.partition()] - 1:
                    remaining.discard(message.partition())
                record = topic.decode(message.value())
                if (record.model_version.model_name != model
                        or record.change != events_pb2.MODEL_VERSION_CHANGE_ROLLED_BACK):
                    continue
                change = next((c for c in record.alias_changes if c.alias == "champion"), None)
                found.append({
                    "at_ms": message.timestamp()[1],
                    "from": change.previous_version if change else 0,
                    "to": record.model_version.version, "reason": record.reason,
                })
    finally:
        consumer.close()
    return sorted(found, key=lambda r: r["at_ms"])
