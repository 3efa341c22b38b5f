"""Building and publishing `ModelVersionAnnounced` records (the registry's change feed).

An announcement is published before the registry is written (see
`flywheel.training.promotions`), so it carries the aliases as they will be, not as the
registry still has them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from google.protobuf.timestamp_pb2 import Timestamp

from flywheel.common.errors import FlywheelError, Unavailable
from flywheel.common.kafka.headers import standard_headers
from flywheel.common.kafka.producer import Producer
from flywheel.common.kafka.topics import Topics
from flywheel.v1 import common_pb2, events_pb2


def announcement(
    model_version: common_pb2.ModelVersion,
    change: int,
    alias_changes: Iterable[tuple[str, int, int]],
    aliases: Mapping[str, int],
    reason: str,
) -> events_pb2.ModelVersionAnnounced:
    """`alias_changes`: (alias, new version, previous version); `aliases`: all of the model's
    aliases after the change."""
    now = Timestamp()
    now.GetCurrentTime()
    meta = common_pb2.ModelVersion()
    meta.CopyFrom(model_version)
    meta.aliases[:] = sorted(a for a, v in aliases.items() if v == meta.version)
    return events_pb2.ModelVersionAnnounced(
        model_version=meta,
        change=change,
        alias_changes=[
            events_pb2.AliasChange(alias=a, version=v, previous_version=p)
            for a, v, p in alias_changes
        ],
        aliases=dict(aliases),
        reason=reason,
        announced_at=now,
    )


def publish(
    producer: Producer, topics: Topics, record: events_pb2.ModelVersionAnnounced, timeout_s: float
) -> None:
    """Blocks until Kafka acknowledged the announcement (keyed by model name: compacted)."""
    topic = topics.model_versions
    producer.send_and_wait(
        topic.name,
        record.model_version.model_name,
        topic.encode(record),
        standard_headers(topic.type_name),
        timeout_s,
    )


class Announcer:
    """Publishes announcements through a producer of its own, one at a time.

    An announcement that is not acknowledged within `timeout_s` fails with UNAVAILABLE naming
    Kafka, and whatever of it still waits in the client's queue is purged, so it cannot reach
    the broker later and contradict the registry that was not written. (One already on the
    wire may still land; the training service re-announces the registry's state afterwards.)
    """

    def __init__(self, bootstrap: str, topics: Topics, timeout_s: float,
                 client_id: str = "flywheel-announcer") -> None:
        self._bootstrap = bootstrap
        self._topics = topics
        self._timeout_s = timeout_s
        self._producer = Producer(bootstrap, client_id=client_id,
                                  delivery_timeout_s=timeout_s * 3)

    def __call__(self, record: events_pb2.ModelVersionAnnounced) -> None:
        try:
            publish(self._producer, self._topics, record, self._timeout_s)
        except FlywheelError as error:
            self._producer.raw.purge(in_queue=True, in_flight=False, blocking=False)
            raise Unavailable(f"{error.message} (broker {self._bootstrap})") from None

    def close(self) -> None:
        self._producer.raw.purge(in_queue=True, in_flight=False, blocking=False)
        self._producer.close(self._timeout_s)
