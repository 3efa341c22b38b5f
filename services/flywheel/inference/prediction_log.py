"""Publishing predictions to flywheel.predictions.v1.

The key is the prediction id the caller got back (the join key): a champion record's own id,
and for a shadow record the id of the champion row it was scored beside, so one feedback
labels both.

By default a Predict answers only after Kafka acknowledged every record of the request: a
prediction id the caller holds is then always joinable with its feedback. All records of a
request are queued at once and their acks awaited together, so the wait costs one broker
round trip (plus the producer's linger), not one per row. With `wait_for_ack` off the records
are fire-and-forget and a failed delivery is only logged and counted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import Counter

from flywheel.common.context import current_request_id
from flywheel.common.errors import FlywheelError, Unavailable
from flywheel.v1 import common_pb2, events_pb2

log = logging.getLogger("flywheel.inference.prediction_log")

LOGGED = Counter(
    "flywheel_inference_predictions_logged_total",
    "Prediction records acknowledged by Kafka (or queued, when not waiting), by role.",
    ["model", "role"],
)
LOG_FAILED = Counter(
    "flywheel_inference_prediction_log_failures_total", "Prediction records Kafka refused."
)

Send = Callable[[str, events_pb2.PredictionLogged], Awaitable[object]]


def prediction_record(
    *,
    prediction_id: str,
    meta: common_pb2.ModelVersion,
    role: int,
    entity_id: str,
    features: Sequence[float],
    output: common_pb2.ModelOutput,
    now: Timestamp,
) -> events_pb2.PredictionLogged:
    return events_pb2.PredictionLogged(
        prediction_id=prediction_id,
        model_name=meta.model_name,
        model_version=meta.version,
        artifact_sha256=meta.sha256,
        role=role,
        entity_type=meta.entity_type,
        entity_id=entity_id,
        feature_names=meta.feature_names,
        features=features,
        output=output,
        prediction_time=now,
        request_id=current_request_id(),
        task=meta.task,
    )


def timestamp_now() -> Timestamp:
    now = Timestamp()
    now.FromNanoseconds(time.time_ns())
    return now


class PredictionLog:
    def __init__(self, send: Send, *, wait_for_ack: bool, timeout_s: float) -> None:
        self._send = send
        self._wait = wait_for_ack
        self._timeout_s = timeout_s

    async def publish(self, keyed: Sequence[tuple[str, events_pb2.PredictionLogged]]) -> None:
        """Queues every (join key, record), then (by default) awaits all their acks at once."""
        if not keyed:
            return
        records = [record for _, record in keyed]
        futures = [asyncio.ensure_future(self._send(key, record)) for key, record in keyed]
        if not self._wait:
            for future, record in zip(futures, records):
                future.add_done_callback(_count(record))
            return
        try:
            await asyncio.wait_for(asyncio.gather(*futures), self._timeout_s)
        except TimeoutError:
            LOG_FAILED.inc(len(records))
            raise Unavailable(
                f"the prediction log did not acknowledge within {self._timeout_s}s; retry"
            ) from None
        except FlywheelError:
            LOG_FAILED.inc(len(records))
            raise
        for record in records:
            LOGGED.labels(record.model_name, common_pb2.ModelRole.Name(record.role)).inc()


def _count(record: events_pb2.PredictionLogged) -> Callable[[asyncio.Future], None]:
    def done(future: asyncio.Future) -> None:
        if future.cancelled() or future.exception() is not None:
            LOG_FAILED.inc()
            log.warning("prediction %s was not logged: %s", record.prediction_id,
                        None if future.cancelled() else future.exception())
        else:
            LOGGED.labels(record.model_name, common_pb2.ModelRole.Name(record.role)).inc()

    return done
