"""``python -m flywheel.mesh.topics``: create the mesh's topics (the one-shot job of compose
and Kubernetes; ``flywheel up`` does the same in-process). Idempotent: existing topics stay."""

from __future__ import annotations

import logging
import sys

from flywheel.common.errors import FlywheelError
from flywheel.common.kafka.admin import ensure_topics
from flywheel.common.kafka.topics import Topic, Topics
from flywheel.common.settings import CommonSettings


def create_topics(bootstrap: str, namespace: str, timeout_s: float = 30.0) -> list[Topic]:
    """Creates what is missing of ``Topics(namespace).all()``; returns the declared topics."""
    topics = Topics(namespace).all()
    ensure_topics(bootstrap, topics, timeout_s=timeout_s)
    return topics


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = CommonSettings()
    try:
        topics = create_topics(settings.kafka_bootstrap, settings.namespace)
    except FlywheelError as exc:
        print(f"topics: {exc}", file=sys.stderr)
        return 1
    for topic in topics:
        print(f"{topic.name} ({topic.partitions} partitions)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
