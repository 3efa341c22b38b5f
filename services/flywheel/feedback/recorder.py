"""Accepting feedback: validation, then publication to `flywheel.feedback.v1`.

Which task a label must fit: when the prediction was already seen by the join, the task
logged with it (and its model's class count from the spec); otherwise, when every model in
the spec has the same task, that one; otherwise the label is accepted as it is and the join
carries it (the training side ignores labels that do not fit its model).

Feedback-loop guard: LABEL_SOURCE_MODEL labels are refused with INVALID_ARGUMENT (field
`source`) unless the `allow_model_labels` setting is on; the source value itself is the
marking, no other flag is needed. The join applies the same rule to records produced
straight onto the topic.

The answer comes only after Kafka acknowledged every accepted record. The waits on Redis (the
join lookup) and on Kafka are bounded by the caller's deadline: a part stalled or down is
UNAVAILABLE naming it, in time (see `flywheel.common.dependency`). Nothing is published
before the lookup answered; a resend after an UNAVAILABLE is safe, since the join keeps the
first label of a prediction id.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf.timestamp_pb2 import Timestamp

from flywheel.common.context import current_request_id
from flywheel.common.dependency import Dependency
from flywheel.common.errors import InvalidArgument, Unavailable
from flywheel.common.kafka.producer import Producer
from flywheel.common.kafka.topics import Topics
from flywheel.common.spec import FlywheelSpec, Task
from flywheel.feedback.join_store import JoinLookup
from flywheel.v1 import common_pb2, events_pb2

_TASKS = {
    common_pb2.MODEL_TASK_BINARY_CLASSIFICATION: Task.BINARY_CLASSIFICATION,
    common_pb2.MODEL_TASK_MULTICLASS_CLASSIFICATION: Task.MULTICLASS_CLASSIFICATION,
    common_pb2.MODEL_TASK_REGRESSION: Task.REGRESSION,
}
MAX_ID_LENGTH = 256


@dataclass(frozen=True)
class Rejection:
    index: int
    prediction_id: str
    field: str
    reason: str


@dataclass(frozen=True)
class LabelRule:
    task: Task | None
    num_classes: int = 2


class FeedbackRecorder:
    def __init__(self, *, spec: FlywheelSpec, producer: Producer, topics: Topics,
                 lookup: JoinLookup, kafka: Dependency, allow_model_labels: bool,
                 max_future_s: float) -> None:
        self._spec = spec
        self._producer = producer
        self._kafka = kafka
        self._topics = topics
        self._lookup = lookup
        self._allow_model_labels = allow_model_labels
        self._max_future_s = max_future_s
        tasks = {(m.task, m.num_classes) for m in spec.models}
        self._default_rule = (
            LabelRule(*next(iter(tasks))) if len(tasks) == 1 else LabelRule(None)
        )

    # -- rules -------------------------------------------------------------------------------

    def _rule_for(self, prediction: events_pb2.PredictionLogged | None) -> LabelRule:
        if prediction is None:
            return self._default_rule
        num_classes = 2
        for model in self._spec.models:
            if model.name == prediction.model_name:
                num_classes = model.num_classes
        task = _TASKS.get(prediction.task)
        return LabelRule(task, num_classes) if task else self._default_rule

    def validate(self, request, rule: LabelRule, now: float) -> None:
        """Raises InvalidArgument naming the field."""
        if not request.prediction_id:
            raise InvalidArgument("prediction_id is required", field="prediction_id")
        if len(request.prediction_id) > MAX_ID_LENGTH:
            raise InvalidArgument("prediction_id is longer than 256 characters",
                                  field="prediction_id")
        kind = request.label.WhichOneof("kind") if request.HasField("label") else None
        if kind is None:
            raise InvalidArgument("label is required (class_label or value)", field="label")
        if request.source == common_pb2.LABEL_SOURCE_MODEL and not self._allow_model_labels:
            raise InvalidArgument(
                "labels from LABEL_SOURCE_MODEL are refused (feedback-loop guard)", field="source"
            )
        if request.HasField("event_time") and (
            request.event_time.seconds > now + self._max_future_s
        ):
            raise InvalidArgument("event_time is in the future", field="event_time")
        if rule.task is None:
            return
        if rule.task.is_classification:
            if kind != "class_label":
                raise InvalidArgument(
                    f"a {rule.task.value} model needs label.class_label, not label.value",
                    field="label",
                )
            if not 0 <= request.label.class_label < rule.num_classes:
                raise InvalidArgument(
                    f"label.class_label {request.label.class_label} is out of range "
                    f"[0, {rule.num_classes})", field="label",
                )
        else:
            if kind != "value":
                raise InvalidArgument("a regression model needs label.value, not a class label",
                                      field="label")
            if not math.isfinite(request.label.value):
                raise InvalidArgument("label.value must be finite", field="label")

    # -- recording ---------------------------------------------------------------------------

    def _record_of(self, request, now: float) -> events_pb2.FeedbackRecorded:
        received = Timestamp()
        received.FromNanoseconds(int(now * 1e9))
        record = events_pb2.FeedbackRecorded(
            prediction_id=request.prediction_id,
            label=request.label,
            source=request.source or common_pb2.LABEL_SOURCE_APPLICATION,
            idempotency_key=request.idempotency_key or uuid.uuid4().hex,
            received_time=received,
            request_id=current_request_id(),
        )
        record.event_time.CopyFrom(request.event_time if request.HasField("event_time")
                                   else received)
        return record

    async def record_one(self, request) -> str:
        keys, rejections = await self.record_many([request])
        if rejections:
            r = rejections[0]
            raise InvalidArgument(r.reason, field=r.field)
        return keys[0]

    async def record_many(self, requests: Sequence, first_index: int = 0
                          ) -> tuple[list[str], list[Rejection]]:
        """Validates each item; publishes the valid ones; returns their keys and rejections."""
        now = time.time()
        known = await self._lookup.predictions([r.prediction_id for r in requests
                                                if r.prediction_id])
        records: list[events_pb2.FeedbackRecorded] = []
        rejections: list[Rejection] = []
        for index, request in enumerate(requests):
            try:
                self.validate(request, self._rule_for(known.get(request.prediction_id)), now)
            except InvalidArgument as error:
                rejections.append(Rejection(first_index + index, request.prediction_id,
                                            error.field or "", error.message))
                continue
            records.append(self._record_of(request, now))
        topic = self._topics.feedback
        futures = [self._producer.send(topic, r.prediction_id, r) for r in records]
        if futures:
            await self._acknowledged(futures)
        return [r.idempotency_key for r in records], rejections

    async def _acknowledged(self, futures: list[asyncio.Future]) -> None:
        try:
            await self._kafka.wait(asyncio.gather(*futures))
        except Unavailable as error:
            raise Unavailable(
                f"{error.message}; the feedback may or may not be recorded (resending it is "
                "safe: the join keeps a prediction id's first label)"
            ) from None
