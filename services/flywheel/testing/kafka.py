"""Topic set-up for tests: the broker never creates topics on its own."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping


def create_topics(
    bootstrap: str, topics: Iterable[str], *, partitions: int = 3,
    config: Mapping[str, str] | None = None, timeout: float = 30.0,
) -> None:
    """Create ``topics`` and wait until the broker reports a leader for every partition."""
    from confluent_kafka.admin import AdminClient, NewTopic

    topics = list(topics)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=partitions, replication_factor=1, config=dict(config or {}))
         for t in topics],
        operation_timeout=timeout, request_timeout=timeout,
    )
    for future in futures.values():
        future.result(timeout=timeout)
    deadline = time.monotonic() + timeout
    while True:
        metadata = admin.list_topics(timeout=max(0.1, deadline - time.monotonic()))
        if all(_has_leaders(metadata.topics.get(t), partitions) for t in topics):
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"topics {topics} have no leaders after {timeout}s")
        time.sleep(0.05)


def delete_topics(bootstrap: str, topics: Iterable[str], timeout: float = 30.0) -> None:
    """Delete ``topics``, waiting for the broker to accept the request."""
    from confluent_kafka.admin import AdminClient

    topics = list(topics)
    if not topics:
        return
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_topics(topics, operation_timeout=timeout).values():
        future.result(timeout=timeout)


def _has_leaders(topic, partitions: int) -> bool:
    if topic is None or topic.error is not None or len(topic.partitions) != partitions:
        return False
    return all(p.leader >= 0 for p in topic.partitions.values())


def read_topic(bootstrap: str, topic, timeout: float = 30.0) -> list:
    """Every committed record of ``topic`` (a ``flywheel.common.kafka.topics.Topic``), decoded,
    from offset 0 up to each partition's end as it is now; partition order."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "test-topic-reader",
                         "enable.auto.commit": False, "isolation.level": "read_committed"})
    try:
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic.name, p), timeout=timeout)[1]
                for p in range(topic.partitions)}
        consumer.assign([TopicPartition(topic.name, p, 0) for p, end in ends.items() if end])
        reached = dict.fromkeys(ends, 0)
        records: dict[int, list] = {p: [] for p in ends}
        deadline = time.monotonic() + timeout
        while any(reached[p] < end for p, end in ends.items()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"read {reached} of {ends} of {topic.name} in {timeout}s")
            for message in consumer.consume(500, 0.2):
                if message.error() is None and message.offset() < ends[message.partition()]:
                    records[message.partition()].append(topic.decode(message.value()))
                    reached[message.partition()] = message.offset() + 1
    finally:
        consumer.close()
    return [record for p in sorted(records) for record in records[p]]
