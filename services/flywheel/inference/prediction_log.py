"""Publishing predictions to flywheel.predictions.v1.

The key is the prediction id the caller got back (the join key): a champion record's own id,
and for a shadow record the id of the champion row it was scored beside, so one feedback
labels both.

By default a Predict answers only after Kafka acknowledged every record of the request: a
prediction id the caller holds is then always joinable with its feedback. All records of a
request are queued at once (one call into the producer, with the request's headers: message
type, request id, traceparent) and their acks awaited together, so the wait costs one broker
round trip (plus the producer's linger), not one per row. With `wait_for_ack` off the records
are fire-and-forget and a failed delivery is only logged and counted.

The path is kept lean because every Predict takes it:

- `RecordEncoder` encodes the fields every record of one model version and role shares
  (names, version, sha256, feature names, ...) once; a record is those bytes followed by its
  own fields (id, entity, features, output, time, request id). Protobuf reads concatenated
  encodings as one message, so the record decodes exactly as if built in one piece.
- Delivery reports are served on the event loop when the log is given `serve_reports` (the
  producer's `poll(0)`, for a producer without a poll thread): while records await their
  reports, a timer serves them every `poll_interval_s`, so no thread fights the loop for the
  GIL per report and no wake-up crosses threads. Without it they come from the producer's poll
  thread into one inbox, and the event loop is woken once per batch of reports (not once per
  record). Either way each request's outcome is settled on the loop, and its waiting call
  resumes directly (no gather, no wait_for).
- The acknowledgement deadline of every waiting request is kept in one queue (all share the
  same timeout, so it is in deadline order), swept by a single timer.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import Counter

from flywheel.common.errors import FlywheelError, Unavailable
from flywheel.common.kafka.headers import Headers, standard_headers
from flywheel.common.metrics import ChildrenByKey
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

# (records as (key, value), headers shared by them, on_delivery(error, message) called once
# per record, from the producer's poll thread) -> None; raises a FlywheelError (and reports
# the records it could not queue as failed) when the producer refuses.
ProduceAll = Callable[[Sequence[tuple[bytes, bytes]], Headers, Callable[[Any, Any], None]], None]


class LogRecord(NamedTuple):
    """One encoded PredictionLogged and what its acknowledgement is counted under."""

    key: bytes
    value: bytes
    model_name: str
    role: int


class RecordEncoder:
    """Encodes the PredictionLogged records of one model version in one role."""

    def __init__(self, meta: common_pb2.ModelVersion, role: int) -> None:
        self.model_name = meta.model_name
        self.role = role
        self._shared = events_pb2.PredictionLogged(
            model_name=meta.model_name,
            model_version=meta.version,
            artifact_sha256=meta.sha256,
            role=role,
            entity_type=meta.entity_type,
            feature_names=meta.feature_names,
            task=meta.task,
        ).SerializeToString()

    def encode(
        self,
        *,
        prediction_id: str,
        entity_id: str,
        features: Sequence[float],
        output: common_pb2.ModelOutput,
        now: Timestamp,
        request_id: str,
    ) -> bytes:
        return self._shared + events_pb2.PredictionLogged(
            prediction_id=prediction_id,
            entity_id=entity_id,
            features=features,
            output=output,
            prediction_time=now,
            request_id=request_id,
        ).SerializeToString()


def timestamp_now() -> Timestamp:
    now = Timestamp()
    now.FromNanoseconds(time.time_ns())
    return now


class _Publish:
    """The records of one request on their way: settled on the loop, once."""

    __slots__ = ("future", "inbox", "left", "records", "settled")

    def __init__(self, records: Sequence[LogRecord], future: asyncio.Future | None,
                 inbox: _Inbox) -> None:
        self.records = records
        self.left = len(records)
        self.future = future
        self.inbox = inbox
        self.settled = False

    def on_delivery(self, error: Any, _message: Any) -> None:
        """The producer's delivery report for one record (a thread polling the producer, or
        the loop: when it serves the reports itself, or the record was never queued)."""
        self.inbox.put(self, error)


class _Inbox:
    """Delivery reports on their way to the event loop. Reports from another thread wake the
    loop once for all the reports that arrived before it got round to them; reports the loop
    serves itself are drained right after, with no wake-up."""

    def __init__(self, loop: asyncio.AbstractEventLoop, drain: Callable[[], None]) -> None:
        self.loop = loop
        self._drain = drain
        self.reports: deque[tuple[_Publish, Any]] = deque()
        self.wake_pending = False
        # True while the loop itself serves reports (and drains right after).
        self.serving = False
        self._loop_thread = threading.get_ident()  # made on the loop

    def put(self, publish: _Publish, error: Any) -> None:
        self.reports.append((publish, error))  # deque.append is atomic
        if self.serving or self.wake_pending:
            return
        self.wake_pending = True
        if threading.get_ident() == self._loop_thread:
            self.loop.call_soon(self._drain)
        else:
            self.loop.call_soon_threadsafe(self._drain)


class PredictionLog:
    def __init__(
        self, produce_all: ProduceAll, type_name: str, *, wait_for_ack: bool, timeout_s: float,
        serve_reports: Callable[[], Any] | None = None, poll_interval_s: float = 0.001,
    ) -> None:
        self._produce_all = produce_all
        self._serve_reports = serve_reports
        self._poll_interval_s = poll_interval_s
        self._poll_at: asyncio.TimerHandle | None = None
        # Records queued whose delivery report has not been drained yet.
        self._unreported = 0
        self._type_name = type_name
        self._wait = wait_for_ack
        self._timeout_s = timeout_s
        self._inbox: _Inbox | None = None
        # (deadline, publish) of the requests waiting for acks, in deadline order.
        self._deadlines: deque[tuple[float, _Publish]] = deque()
        self._sweep_at: asyncio.TimerHandle | None = None
        self._logged = ChildrenByKey(
            LOGGED, lambda model_name, role: (model_name, common_pb2.ModelRole.Name(role)))

    async def publish(self, records: Sequence[LogRecord]) -> None:
        """Queues every record, then (by default) awaits all their acks at once."""
        if not records:
            return
        inbox = self._inbox
        if inbox is None:
            inbox = self._inbox = _Inbox(asyncio.get_running_loop(), self._drain)
        loop = inbox.loop
        future = loop.create_future() if self._wait else None
        publish = _Publish(records, future, inbox)
        # Counted before queueing: a record never queued is reported at once (and drained).
        self._unreported += len(records)
        try:
            self._produce_all([(r.key, r.value) for r in records],
                              standard_headers(self._type_name), publish.on_delivery)
        except FlywheelError:
            publish.settled = True
            LOG_FAILED.inc(len(records))
            raise
        finally:
            if self._serve_reports is not None and self._poll_at is None:
                self._poll_at = loop.call_later(self._poll_interval_s, self._poll)
        if future is None:
            return
        deadline = loop.time() + self._timeout_s
        self._deadlines.append((deadline, publish))
        if self._sweep_at is None:
            self._sweep_at = loop.call_at(deadline, self._sweep)
        await future

    # -- on the loop ------------------------------------------------------------------------

    def _poll(self) -> None:
        """Serves the delivery reports that are ready; again after `poll_interval_s` while
        records await theirs."""
        self._poll_at = None
        inbox = self._inbox
        inbox.serving = True
        try:
            self._serve_reports()
        finally:
            inbox.serving = False
            self._drain()
            if self._unreported > 0:
                self._poll_at = inbox.loop.call_later(self._poll_interval_s, self._poll)

    def _drain(self) -> None:
        inbox = self._inbox
        inbox.wake_pending = False  # first: a report arriving from now on wakes the loop again
        reports = inbox.reports
        while reports:
            publish, error = reports.popleft()
            self._unreported -= 1
            if publish.settled:
                continue
            if error is not None:
                self._settle(publish, Unavailable(f"Kafka refused the record: {error.str()}"))
            else:
                publish.left -= 1
                if publish.left == 0:
                    self._settle(publish, None)
        deadlines = self._deadlines
        while deadlines and deadlines[0][1].settled:
            deadlines.popleft()

    def _settle(self, publish: _Publish, error: FlywheelError | None) -> None:
        publish.settled = True
        future = publish.future
        if error is not None:
            LOG_FAILED.inc(len(publish.records))
            if future is None:
                log.warning("%d prediction records were not logged: %s",
                            len(publish.records), error.message)
            elif not future.done():
                future.set_exception(error)
            return
        for record in publish.records:
            self._logged(record.model_name, record.role).inc()
        if future is not None and not future.done():
            future.set_result(None)

    def _sweep(self) -> None:
        self._sweep_at = None
        loop = self._inbox.loop
        now = loop.time()
        deadlines = self._deadlines
        while deadlines:
            deadline, publish = deadlines[0]
            if not publish.settled:
                if deadline > now:
                    self._sweep_at = loop.call_at(deadline, self._sweep)
                    return
                self._settle(publish, Unavailable(
                    f"the prediction log did not acknowledge within {self._timeout_s}s; retry"))
            deadlines.popleft()
