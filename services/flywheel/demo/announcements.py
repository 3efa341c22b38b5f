"""The model-version announcements of a run, followed live: which candidates the mesh
refused and which champions it rolled back, as they happen.

A refusal has no announcement of its own: the training service announces a candidate
REGISTERED and, right after, PROMOTED (or SHADOWED) when its gate passed. A registered
version that no promotion follows within ``grace_s`` was refused. A rollback is announced
as ROLLED_BACK (the live gate's, and a refused load's alias returning).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from flywheel.common.kafka.security import secured
from flywheel.common.kafka.topics import Topics
from flywheel.v1 import events_pb2

log = logging.getLogger("flywheel.demo")

REFUSED = "refused"
ROLLED_BACK = "rolled back"
REFUSAL_GRACE_S = 5.0  # the promotion follows its registration within the same run

_PROMOTIONS = (events_pb2.MODEL_VERSION_CHANGE_PROMOTED, events_pb2.MODEL_VERSION_CHANGE_SHADOWED)


@dataclass(frozen=True)
class TimelineEvent:
    at_ms: int
    kind: str  # REFUSED or ROLLED_BACK
    version: int  # the refused candidate; for a rollback, the champion it returned to
    previous: int  # for a rollback, the champion rolled back from; else 0
    reason: str

    def describe(self, started_ms: int, model: str) -> str:
        t = (self.at_ms - started_ms) / 1000
        if self.kind == REFUSED:
            return f"t={t:6.1f}s  {model} v{self.version} refused ({self.reason})"
        return (f"t={t:6.1f}s  {model} rolled back v{self.previous} -> v{self.version} "
                f"({self.reason})")


class Timeline:
    """Announcements in, refusals and rollbacks out. Pure: the caller feeds records and
    the clock."""

    def __init__(self, model: str, grace_s: float = REFUSAL_GRACE_S) -> None:
        self.model = model
        self.grace_ms = int(grace_s * 1000)
        self.events: list[TimelineEvent] = []
        self._pending: dict[int, tuple[int, str]] = {}  # registered version -> (at_ms, reason)

    def feed(self, record: events_pb2.ModelVersionAnnounced, at_ms: int) -> list[TimelineEvent]:
        if record.model_version.model_name != self.model:
            return []
        version = record.model_version.version
        if record.change == events_pb2.MODEL_VERSION_CHANGE_REGISTERED:
            self._pending[version] = (at_ms, record.reason)
        elif record.change in _PROMOTIONS:
            self._pending.pop(version, None)
        elif record.change == events_pb2.MODEL_VERSION_CHANGE_ROLLED_BACK:
            change = next((c for c in record.alias_changes if c.alias == "champion"), None)
            return self._add(TimelineEvent(at_ms, ROLLED_BACK, version,
                                           change.previous_version if change else 0,
                                           record.reason))
        return []

    def expire(self, now_ms: int) -> list[TimelineEvent]:
        """Registered versions no promotion followed within the grace: refused."""
        due = sorted(v for v, (at, _) in self._pending.items() if now_ms - at >= self.grace_ms)
        found = []
        for version in due:
            at_ms, reason = self._pending.pop(version)
            found.extend(self._add(TimelineEvent(at_ms, REFUSED, version, 0, reason)))
        return found

    def _add(self, event: TimelineEvent) -> list[TimelineEvent]:
        self.events.append(event)
        return [event]

    def times(self, kind: str, started_ms: int) -> list[tuple[float, int]]:
        """(seconds since ``started_ms``, version) of every event of ``kind``."""
        return [((e.at_ms - started_ms) / 1000, e.version) for e in self.events if e.kind == kind]


def announcements_consumer(bootstrap: str, purpose: str):
    from confluent_kafka import Consumer

    return Consumer(secured({
        "bootstrap.servers": bootstrap,
        "group.id": f"flywheel-demo-{purpose}-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "socket.timeout.ms": 10000,
    }))


def assign_since(consumer, topic_name: str, since_ms: int, timeout_s: float) -> dict[int, int]:
    """Assigns every partition of ``topic_name`` from the first record at or after
    ``since_ms`` (its end when there is none yet); returns the end offset of each partition
    that has such records."""
    from confluent_kafka import OFFSET_END, TopicPartition

    metadata = consumer.list_topics(topic_name, timeout=timeout_s)
    partitions = sorted(metadata.topics[topic_name].partitions)
    starts = consumer.offsets_for_times(
        [TopicPartition(topic_name, p, since_ms) for p in partitions], timeout=timeout_s)
    ends = {p: consumer.get_watermark_offsets(TopicPartition(topic_name, p),
                                              timeout=timeout_s)[1] for p in partitions}
    consumer.assign([tp if tp.offset >= 0 else TopicPartition(topic_name, tp.partition, OFFSET_END)
                     for tp in starts])
    return {tp.partition: ends[tp.partition] for tp in starts
            if 0 <= tp.offset < ends[tp.partition]}


class AnnouncementFollower:
    """Reads flywheel.model-versions.v1 from ``since_ms`` in a thread of its own and hands
    each (record, timestamp ms) to ``received``, until ``stop()``. A broker that cannot be
    read ends the following quietly: the report's audit reads the same topic again."""

    def __init__(self, bootstrap: str, namespace: str, since_ms: int,
                 received: Callable[[events_pb2.ModelVersionAnnounced, int], None]) -> None:
        self._bootstrap, self._since_ms, self._received = bootstrap, since_ms, received
        self._topic = Topics(namespace).model_versions
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="announcements", daemon=True)

    def start(self) -> AnnouncementFollower:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()

    def _follow(self) -> None:
        from confluent_kafka import KafkaException

        consumer = announcements_consumer(self._bootstrap, "follow")
        try:
            assign_since(consumer, self._topic.name, self._since_ms, timeout_s=10.0)
            while not self._stopped.is_set():
                for message in consumer.consume(num_messages=100, timeout=0.5):
                    if message.error() is None:
                        self._received(self._topic.decode(message.value()),
                                       message.timestamp()[1])
        except KafkaException as exc:
            log.warning("not following %s live: %s", self._topic.name, exc)
        finally:
            consumer.close()


class LiveAnnouncements:
    """A follower and a timeline together: ``drain()`` (from the run's own loop) gives the
    refusals and rollbacks announced since the last call."""

    def __init__(self, bootstrap: str, namespace: str, model: str, since_ms: int) -> None:
        self.timeline = Timeline(model)
        self._arrived: deque[tuple[events_pb2.ModelVersionAnnounced, int]] = deque()
        self._follower = AnnouncementFollower(bootstrap, namespace, since_ms,
                                              lambda record, at: self._arrived.append((record, at)))

    def start(self) -> LiveAnnouncements:
        self._follower.start()
        return self

    def stop(self) -> None:
        self._follower.stop()

    def drain(self, now_ms: int | None = None) -> list[TimelineEvent]:
        found: list[TimelineEvent] = []
        while self._arrived:
            found.extend(self.timeline.feed(*self._arrived.popleft()))
        found.extend(self.timeline.expire(int(time.time() * 1000) if now_ms is None else now_ms))
        return found
