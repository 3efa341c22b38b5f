"""The consumer side: events from `flywheel.events.v1` into the online store and the index.

One Redis call per batch. A batch holding an invalid event raises `InvalidArgument`; the
error policy below sends that to the DLQ path of `ConsumerWorker`, which re-runs the batch
one record at a time (the valid ones are written, idempotently) and dead-letters the invalid
ones with their reason. Any other failure (Redis down) is retried and the offsets stay put.
"""

from __future__ import annotations

from prometheus_client import Counter

from flywheel.common import tracing
from flywheel.common.errors import InvalidArgument
from flywheel.common.kafka.records import ErrorAction, Record
from flywheel.features.core import FeatureStore

MATERIALIZED = Counter(
    "flywheel_features_events_total", "Events consumed, by outcome.", ["outcome"]
)


class Materializer:
    def __init__(self, store: FeatureStore) -> None:
        self._store = store

    def __call__(self, records: list[Record]) -> None:
        # One span per request whose events are in the batch, in that request's trace.
        with tracing.each_trace((r.headers for r in records), "materialize events"):
            self._materialize(records)

    def _materialize(self, records: list[Record]) -> None:
        events = [record.value for record in records]
        valid, rejections = self._store.split_valid(events)
        if rejections:
            first = rejections[0].problem
            raise InvalidArgument(
                f"{len(rejections)} invalid event(s); first: {first.field}: {first.reason}",
                field=first.field,
            )
        results = self._store.materialize(valid)
        written = sum(1 for r in results if r)
        MATERIALIZED.labels("written").inc(written)
        MATERIALIZED.labels("stale").inc(len(results) - written)


def dead_letter_invalid(error: Exception, attempt: int) -> ErrorAction:
    """Invalid events go to the DLQ at once; anything else is retried (nothing skipped)."""
    return ErrorAction.DEAD_LETTER if isinstance(error, InvalidArgument) else ErrorAction.RETRY


class IndexFollower:
    """Every replica's own reader of the whole events topic, for its vector index only.

    The materializer's consumer group splits the partitions between replicas: Redis is
    shared, so each row is written once by one of them, but each replica's FAISS index would
    hold only its own partitions' vectors and SearchSimilar would answer by replica. This
    reader sees every partition (no group, see ConsumerWorker's follow_all) and puts each
    valid event's vector into the index under the newer-wins rule, so every replica indexes
    every vector. Invalid events are the materializer's to dead-letter: skipped here."""

    def __init__(self, store: FeatureStore) -> None:
        self._store = store

    def __call__(self, records: list[Record]) -> None:
        valid, _ = self._store.split_valid([record.value for record in records])
        self._store.index_vectors(valid)
