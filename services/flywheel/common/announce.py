"""Building and publishing `ModelVersionAnnounced` records (the registry's change feed)."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from flywheel.common.kafka.headers import standard_headers
from flywheel.common.kafka.producer import Producer
from flywheel.common.kafka.topics import Topics
from flywheel.common.registry import ModelRegistry
from flywheel.v1 import events_pb2


def announcement(
    registry: ModelRegistry,
    name: str,
    version: int,
    change: int,
    alias_changes: list[tuple[str, int, int]],
    reason: str,
) -> events_pb2.ModelVersionAnnounced:
    """`alias_changes`: (alias, new version, previous version) tuples."""
    now = Timestamp()
    now.GetCurrentTime()
    return events_pb2.ModelVersionAnnounced(
        model_version=registry.get(name, version),
        change=change,
        alias_changes=[
            events_pb2.AliasChange(alias=a, version=v, previous_version=p)
            for a, v, p in alias_changes
        ],
        aliases=registry.aliases(name),
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
