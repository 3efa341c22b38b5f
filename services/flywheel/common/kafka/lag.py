"""Consumer lag per group and topic, from librdkafka's own statistics (emitted every few
seconds from inside `consume`, on the consumer's thread): what the dashboard plots as lag."""

from __future__ import annotations

import json
import logging
from typing import Any

from prometheus_client import Gauge

log = logging.getLogger("flywheel.kafka.lag")

CONSUMER_LAG = Gauge(
    "flywheel_kafka_consumer_lag", "Records between a consumer group's position and the end of "
    "the topic, summed over the partitions assigned to this process.", ["group", "topic"])


def lag_reporting(group: str, interval_ms: int = 5000) -> dict[str, Any]:
    """Consumer settings that report the group's lag every `interval_ms`."""
    return {"statistics.interval.ms": interval_ms,
            "stats_cb": lambda raw: report_lag(group, raw)}


def report_lag(group: str, raw: str) -> None:
    try:
        topics = json.loads(raw).get("topics", {})
    except ValueError:
        log.debug("unreadable librdkafka statistics")
        return
    for topic, figures in topics.items():
        # -1: a partition not assigned here, or whose position is not known yet.
        lags = [p.get("consumer_lag", -1) for number, p in figures.get("partitions", {}).items()
                if number != "-1"]
        known = [lag for lag in lags if lag >= 0]
        if known:
            CONSUMER_LAG.labels(group, topic).set(sum(known))
