"""Reporting every model load on `flywheel.model-loads.v1`: loaded, or refused with the reason.

`reporting(load, report)` wraps the store's load function: every attempt, at start-up, after
an announcement or for any other reason, ends in exactly one report. The training service
reads them and takes a refused version out of the registry's aliases. A report that cannot be
delivered is logged and dropped: serving never waits on it, and the version stays as it was
(loaded or not) either way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from google.protobuf.timestamp_pb2 import Timestamp

from flywheel.common.errors import FlywheelError
from flywheel.common.kafka.headers import standard_headers
from flywheel.common.kafka.producer import Producer
from flywheel.common.kafka.topics import Topic
from flywheel.inference.loader import LoadedModel, Rejected
from flywheel.v1 import common_pb2, events_pb2

log = logging.getLogger("flywheel.inference.load_reports")

LOADED = events_pb2.MODEL_LOAD_OUTCOME_LOADED
REFUSED = events_pb2.MODEL_LOAD_OUTCOME_REFUSED

Load = Callable[[common_pb2.ModelVersion], Awaitable[LoadedModel]]
Report = Callable[[events_pb2.ModelLoadReported], Awaitable[None]]


def load_report(meta: common_pb2.ModelVersion, outcome: int, reason: str,
                replica: str) -> events_pb2.ModelLoadReported:
    now = Timestamp()
    now.GetCurrentTime()
    return events_pb2.ModelLoadReported(
        model_name=meta.model_name, version=meta.version, alias=",".join(meta.aliases),
        outcome=outcome, reason=reason, replica=replica, reported_at=now,
    )


def refusal_reason(error: BaseException) -> str:
    if isinstance(error, Rejected):
        return f"{error.reason}: {error.message}"
    if isinstance(error, TimeoutError):
        return "load timed out"
    if isinstance(error, FlywheelError):
        return error.message
    return f"{type(error).__name__}: {error}"


def reporting(load: Load, report: Report, replica: str) -> Load:
    """`load`, with one report per attempt; errors of `load` go on to the caller unchanged."""

    async def load_and_report(meta: common_pb2.ModelVersion) -> LoadedModel:
        try:
            model = await load(meta)
        except Exception as error:
            await report(load_report(meta, REFUSED, refusal_reason(error), replica))
            raise
        await report(load_report(meta, LOADED, "", replica))
        return model

    return load_and_report


class LoadReporter:
    """Publishes reports through the service's producer, from a worker thread, in the
    background: the load (and the swap after it) never waits for Kafka's acknowledgement."""

    def __init__(self, producer: Producer, topic: Topic, timeout_s: float) -> None:
        self._producer = producer
        self._topic = topic
        self._timeout_s = timeout_s
        self._sending: set[asyncio.Task] = set()

    async def __call__(self, record: events_pb2.ModelLoadReported) -> None:
        task = asyncio.create_task(self._send(record), name="model-load-report")
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, record: events_pb2.ModelLoadReported) -> None:
        try:
            await asyncio.to_thread(
                self._producer.send_and_wait, self._topic.name, record.model_name,
                self._topic.encode(record), standard_headers(self._topic.type_name),
                self._timeout_s,
            )
        except FlywheelError as error:
            log.error("load report of %s v%d not delivered: %s", record.model_name,
                      record.version, error.message)
