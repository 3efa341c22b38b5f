"""The join loop: predictions + feedback in, labeled examples (and late feedback) out,
exactly once, on the shared transactional worker.

Per batch: load the valid join state of every key in the batch (one Redis round trip),
run the pure state machine record by record, write the state back (one round trip), and
produce the outcomes into the open transaction; the worker then commits the outputs together
with the input offsets. See `flywheel.feedback.join` for why a crash anywhere in between
neither loses nor duplicates a labeled example.

Traces: a labeled example continues the trace of the prediction it labels (its record's
`traceparent` is that trace's), and links to the trace of the feedback call. Both contexts are
kept in the join state beside the prediction and the feedback (`t:<prediction id>`, `t:f`),
since the two records arrive in different batches.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from prometheus_client import Counter

from flywheel.common import tracing
from flywheel.common.kafka.records import Record
from flywheel.common.kafka.topics import Topics
from flywheel.common.kafka.transactional import Positions, TransactionalWorker, TxOutput
from flywheel.feedback.join import (
    FEEDBACK,
    PREDICTIONS,
    Entry,
    JoinPolicy,
    JoinState,
    Outcomes,
    Position,
    Validity,
    on_feedback,
    on_prediction,
)
from flywheel.feedback.join_store import JoinStore

log = logging.getLogger("flywheel.feedback.joiner")

JOIN_OUTCOMES = Counter(
    "flywheel_feedback_join_total",
    "Join outcomes: joined, late, duplicate_feedback, duplicate_prediction, pending, "
    "refused_model_label (an aborted batch that is replayed counts again).",
    ["outcome"],
)


@dataclass
class JoinStats:
    joined: int = 0
    late: int = 0
    duplicate_feedback: int = 0
    duplicate_predictions: int = 0
    pending_feedback: int = 0
    refused_model_labels: int = 0
    by_outcome: dict[str, int] = field(default_factory=dict)

    def add(self, out: Outcomes) -> None:
        for name, value in (
            ("joined", len(out.labeled)),
            ("late", len(out.late)),
            ("duplicate_feedback", out.duplicate_feedback),
            ("duplicate_prediction", out.duplicate_predictions),
            ("pending", out.pending_feedback),
            ("refused_model_label", out.refused_model_labels),
        ):
            if value:
                JOIN_OUTCOMES.labels(name).inc(value)
        self.joined += len(out.labeled)
        self.late += len(out.late)
        self.duplicate_feedback += out.duplicate_feedback
        self.duplicate_predictions += out.duplicate_predictions
        self.pending_feedback += out.pending_feedback
        self.refused_model_labels += out.refused_model_labels


TRACE_PREFIX = "t:"
FEEDBACK_TRACE = "t:f"
_TRACE_HEADERS = ("traceparent", "tracestate")


def _keep_trace(state: JoinState, record: Record, position: Position, epoch: str) -> None:
    """Stores the record's trace context beside what the step stored of it (the prediction
    or the first feedback); nothing for a duplicate or a record without one."""
    carrier = "\n".join(record.headers.get(h, "") for h in _TRACE_HEADERS)
    if not record.headers.get("traceparent"):
        return
    if position.source == PREDICTIONS:
        stored, name = f"p:{record.value.prediction_id}", f"{TRACE_PREFIX}{record.value.prediction_id}"
    else:
        stored, name = "f", FEEDBACK_TRACE
    entry = state.writes.get(stored)
    if entry is not None and entry.position == position:
        state.put(name, Entry(epoch, position, carrier.encode()))


def _trace_of(state: JoinState, name: str) -> dict[str, str]:
    entry = state.fields.get(name)
    if entry is None:
        return {}
    return {h: v for h, v in zip(_TRACE_HEADERS, entry.payload.decode().split("\n")) if v}


class Joiner:
    def __init__(
        self,
        *,
        store: JoinStore,
        topics: Topics,
        policy: JoinPolicy,
        bootstrap: str,
        group_id: str,
        transactional_id: str,
        instance_id: str,
        max_batch: int = 1000,
        kafka_timeout_s: float = 30.0,
    ) -> None:
        self._store = store
        self._topics = topics
        self._policy = policy
        self._sources = {topics.predictions.name: PREDICTIONS, topics.feedback.name: FEEDBACK}
        self._validity = Validity("", {})
        self.stats = JoinStats()
        self.worker = TransactionalWorker(
            bootstrap=bootstrap,
            group_id=group_id,
            transactional_id=transactional_id,
            topics=[topics.predictions, topics.feedback],
            processor=self._process,
            on_reset=self._on_reset,
            max_batch=max_batch,
            kafka_timeout_s=kafka_timeout_s,
            static_member_id=instance_id,
            name="feedback-joiner",
        )

    def start(self) -> None:
        self.worker.start()

    def stop(self) -> None:
        self.worker.stop()

    @property
    def healthy(self) -> bool:
        return self.worker.healthy

    def _on_reset(self, positions: Positions, epoch: str) -> None:
        committed = {(self._sources[t], p): o for (t, p), o in positions.items()}
        self._validity = Validity(epoch, committed)

    def _process(self, records: list[Record], output: TxOutput) -> None:
        validity = self._validity
        keys = [self._join_key(r) for r in records]
        states = self._store.load(keys, validity)
        batch_stats: list[Outcomes] = []
        for record, key in zip(records, keys, strict=True):
            source = self._sources[record.topic]
            position = Position(source, record.partition, record.offset)
            step = on_prediction if source == PREDICTIONS else on_feedback
            state = states[key]
            out = step(state, record.value, position, validity.epoch, self._policy)
            _keep_trace(state, record, position, validity.epoch)
            for example in out.labeled:
                with tracing.continued(
                    _trace_of(state, f"{TRACE_PREFIX}{example.prediction_id}"), "join label",
                    {"flywheel.prediction_id": example.prediction_id},
                    links=tracing.links_to([_trace_of(state, FEEDBACK_TRACE)], 1),
                ):
                    output.produce(self._topics.labeled, example.prediction_id, example)
            for feedback in out.late:
                output.produce(self._topics.late_feedback, key, feedback)
            batch_stats.append(out)
        # State goes to Redis before the worker commits; see the module docstring.
        self._store.save(states)
        for out in batch_stats:
            self.stats.add(out)

    @staticmethod
    def _join_key(record: Record) -> str:
        if record.key:
            return record.key.decode("utf-8", "replace")
        return record.value.prediction_id
