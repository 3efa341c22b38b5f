"""The label join as a pure state machine: no Redis, no Kafka.

State is kept per *join key*: the prediction id the caller got back (the Kafka key of both
the prediction log and the feedback). A shadow prediction is logged under the champion's
prediction id as its key and carries its own `prediction_id`, so one feedback joins every
prediction made for that row, each into its own labeled example.

Fields of one join key's state:

    f          the first feedback (first wins)
    p:<id>     a prediction logged under this key
    d:<id>     the outcome decided for that prediction ("joined" or "late")

Every entry remembers the input record that wrote it (topic kind, partition, offset) and the
epoch of the worker that wrote it. Writes are made before the Kafka transaction that carries
their output commits; if that transaction aborts (or the process dies), the input is replayed
under a new epoch from the committed positions. An entry is therefore *valid* only when it
was written in the current epoch, or by a record before the committed position of its
partition (its transaction committed). Invalid entries are treated as never written, so the
replay decides exactly as if the aborted attempt had not happened: nothing lost, nothing
emitted twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from flywheel.v1 import common_pb2, events_pb2

PREDICTIONS = "p"
FEEDBACK = "f"
JOINED = b"joined"
LATE = b"late"


@dataclass(frozen=True)
class Position:
    source: str  # PREDICTIONS or FEEDBACK
    partition: int
    offset: int


@dataclass(frozen=True)
class Entry:
    epoch: str
    position: Position
    payload: bytes

    def encode(self) -> bytes:
        p = self.position
        return f"{self.epoch}:{p.source}:{p.partition}:{p.offset}:".encode() + self.payload

    @staticmethod
    def decode(raw: bytes) -> Entry:
        epoch, source, partition, offset, payload = raw.split(b":", 4)
        return Entry(epoch.decode(), Position(source.decode(), int(partition), int(offset)),
                     payload)


@dataclass(frozen=True)
class Validity:
    """Which stored entries count: this epoch's, and those behind the committed positions."""

    epoch: str
    committed: Mapping[tuple[str, int], int]

    def valid(self, entry: Entry) -> bool:
        if entry.epoch == self.epoch:
            return True
        p = entry.position
        return p.offset < self.committed.get((p.source, p.partition), 0)


@dataclass
class Outcomes:
    """What one input record led to."""

    labeled: list[events_pb2.LabeledExample] = field(default_factory=list)
    late: list[events_pb2.FeedbackRecorded] = field(default_factory=list)
    duplicate_feedback: int = 0
    duplicate_predictions: int = 0
    pending_feedback: int = 0
    refused_model_labels: int = 0


@dataclass(frozen=True)
class JoinPolicy:
    allowed_lateness_s: float
    allow_model_labels: bool = False


def _seconds(ts) -> float:
    return ts.seconds + ts.nanos / 1e9


def feedback_time(feedback: events_pb2.FeedbackRecorded) -> float:
    """When the ground truth was observed; the receive time when the sender gave none."""
    if feedback.HasField("event_time"):
        return _seconds(feedback.event_time)
    return _seconds(feedback.received_time)


def labeled_example(
    prediction: events_pb2.PredictionLogged, feedback: events_pb2.FeedbackRecorded
) -> events_pb2.LabeledExample:
    example = events_pb2.LabeledExample(
        prediction_id=prediction.prediction_id,
        model_name=prediction.model_name,
        model_version=prediction.model_version,
        role=prediction.role,
        entity_type=prediction.entity_type,
        entity_id=prediction.entity_id,
        feature_names=prediction.feature_names,
        features=prediction.features,
        label=feedback.label,
        prediction=prediction.output,
        prediction_time=prediction.prediction_time,
        label_source=feedback.source,
        task=prediction.task,
    )
    example.feedback_time.FromNanoseconds(int(feedback_time(feedback) * 1e9))
    return example


class JoinState:
    """One join key's valid state, plus the writes this batch made to it."""

    def __init__(self, fields: Mapping[str, Entry] | None = None) -> None:
        self.fields: dict[str, Entry] = dict(fields or {})
        self.writes: dict[str, Entry] = {}

    @classmethod
    def from_stored(cls, stored: Mapping[str, bytes], validity: Validity) -> JoinState:
        fields = {}
        for name, raw in stored.items():
            entry = Entry.decode(raw)
            if validity.valid(entry):
                fields[name] = entry
        return cls(fields)

    def put(self, name: str, entry: Entry) -> None:
        self.fields[name] = entry
        self.writes[name] = entry

    def predictions(self) -> list[tuple[str, Entry]]:
        return [(name[2:], e) for name, e in self.fields.items() if name.startswith("p:")]


def _decide(state: JoinState, prediction_id: str, prediction: events_pb2.PredictionLogged,
            feedback: events_pb2.FeedbackRecorded, trigger: Entry, policy: JoinPolicy,
            out: Outcomes) -> None:
    lateness = feedback_time(feedback) - _seconds(prediction.prediction_time)
    if lateness > policy.allowed_lateness_s:
        out.late.append(feedback)
        outcome = LATE
    else:
        out.labeled.append(labeled_example(prediction, feedback))
        outcome = JOINED
    state.put(f"d:{prediction_id}", Entry(trigger.epoch, trigger.position, outcome))


def on_prediction(state: JoinState, prediction: events_pb2.PredictionLogged, position: Position,
                  epoch: str, policy: JoinPolicy) -> Outcomes:
    out = Outcomes()
    pid = prediction.prediction_id
    existing = state.fields.get(f"p:{pid}")
    if f"d:{pid}" in state.fields or (existing and existing.position != position):
        out.duplicate_predictions += 1
        return out
    entry = Entry(epoch, position, prediction.SerializeToString())
    state.put(f"p:{pid}", entry)
    feedback_entry = state.fields.get("f")
    if feedback_entry is not None:
        feedback = events_pb2.FeedbackRecorded.FromString(feedback_entry.payload)
        _decide(state, pid, prediction, feedback, entry, policy, out)
    return out


def on_feedback(state: JoinState, feedback: events_pb2.FeedbackRecorded, position: Position,
                epoch: str, policy: JoinPolicy) -> Outcomes:
    out = Outcomes()
    if feedback.source == common_pb2.LABEL_SOURCE_MODEL and not policy.allow_model_labels:
        out.refused_model_labels += 1
        return out
    existing = state.fields.get("f")
    if existing is not None and existing.position != position:
        out.duplicate_feedback += 1  # first wins
        return out
    entry = Entry(epoch, position, feedback.SerializeToString())
    state.put("f", entry)
    waiting = [(pid, e) for pid, e in state.predictions() if f"d:{pid}" not in state.fields]
    if not waiting:
        out.pending_feedback += 1
    for pid, prediction_entry in waiting:
        prediction = events_pb2.PredictionLogged.FromString(prediction_entry.payload)
        _decide(state, pid, prediction, feedback, entry, policy, out)
    return out
