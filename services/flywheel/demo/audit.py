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
    from flywheel.demo.announcements import (
        ROLLED_BACK,
        Timeline,
        announcements_consumer,
        assign_since,
    )

    topic = Topics(namespace).model_versions
    consumer = announcements_consumer(bootstrap, "announcements")
    timeline = Timeline(model)
    try:
        ends = assign_since(consumer, topic.name, since_ms, timeout_s)
        remaining = set(ends)
        deadline = time.monotonic() + timeout_s
        while remaining and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=500, timeout=0.5):
                if message.error() is not None or message.partition() not in ends:
                    continue  # a partition with nothing since since_ms, read from its end
                if message.offset() >= ends[message.partition()] - 1:
                    remaining.discard(message.partition())
                timeline.feed(topic.decode(message.value()), message.timestamp()[1])
    finally:
        consumer.close()
    return [{"at_ms": e.at_ms, "from": e.previous, "to": e.version, "reason": e.reason}
            for e in sorted(timeline.events, key=lambda e: e.at_ms) if e.kind == ROLLED_BACK]
