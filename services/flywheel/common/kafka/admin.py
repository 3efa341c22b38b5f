"""Idempotent topic creation from the declarations in `topics.py`."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from flywheel.common.errors import Unavailable
from flywheel.common.kafka.security import secured
from flywheel.common.kafka.topics import Topic

log = logging.getLogger("flywheel.kafka.admin")


def ensure_topics(bootstrap: str, topics: Iterable[Topic], timeout_s: float = 30.0) -> None:
    """Creates the topics that do not exist yet; existing ones are left as they are."""
    admin = AdminClient(secured({"bootstrap.servers": bootstrap, "socket.timeout.ms": 10000}))
    wanted = {topic.name: topic for topic in topics}
    try:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
    except KafkaException as error:
        raise Unavailable(f"Kafka at {bootstrap} did not answer: {error}") from None
    missing = [
        NewTopic(t.name, num_partitions=t.partitions, replication_factor=1, config=dict(t.config))
        for name, t in wanted.items()
        if name not in existing
    ]
    if not missing:
        return
    futures = admin.create_topics(missing, operation_timeout=timeout_s, request_timeout=timeout_s)
    for name, future in futures.items():
        try:
            future.result(timeout=timeout_s)
            log.info("created topic", extra={"topic": name})
        except KafkaException as error:
            if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise Unavailable(f"could not create topic {name}: {error}") from None
