"""Ingest's domain: validate events, publish the good ones, answer once Kafka acknowledged.

Requests come in encoded (an IngestRequest or IngestStreamRequest: field 1, repeated Event),
and each event is screened as bytes, whose bytes then go to Kafka as they came. Events that
share a layout with one already checked are checked together in numpy
(`flywheel.common.event_layout`); one regular expression per entity type recognizes the
other certainly valid events (`flywheel.common.event_wire`). Only the rest are decoded,
walked field by field (which writes the problems) and encoded again, as every event once was.

"Accepted" means durably acknowledged (the producer is idempotent with acks=all): a reply
comes only after every delivery report of the events it counts. The wait is bounded by a
budget the caller gives (its deadline less a margin), so a broker that is down gives
`Unavailable` in time instead of a hang.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError
from prometheus_client import Counter

from flywheel.common.errors import InvalidArgument, Unavailable
from flywheel.common.event_layout import LayoutScreen
from flywheel.common.event_wire import seconds_ceiling, split_repeated
from flywheel.common.kafka.headers import standard_headers
from flywheel.common.kafka.producer import Producer
from flywheel.common.kafka.topics import Topic
from flywheel.common.validation import EventValidator, Problem
from flywheel.v1 import events_pb2

ACCEPTED = Counter("flywheel_ingest_events_accepted_total", "Events acknowledged by Kafka.")
REJECTED = Counter(
    "flywheel_ingest_events_rejected_total", "Events refused by validation.", ["reason"]
)

# Seconds left for the acknowledgements; called right before each wait.
Budget = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Rejection:
    index: int
    event_id: str
    problem: Problem


@dataclass(slots=True)
class Outcome:
    accepted: int = 0
    accepted_event_ids: list[str] = field(default_factory=list)
    # The first rejections (up to the ingestor's limit); `rejected` counts them all.
    rejections: list[Rejection] = field(default_factory=list)
    rejected: int = 0
    batches: int = 0


class _Acknowledgements:
    """Delivery reports of one published chunk, settled into one asyncio future.

    Called from the producer's poll thread; only that thread counts, the loop is told once.
    """

    __slots__ = ("_loop", "error", "future", "remaining")

    def __init__(self, loop: asyncio.AbstractEventLoop, count: int) -> None:
        self.remaining = count
        self.error: Any = None
        self._loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        if count == 0:
            self.future.set_result(None)

    def __call__(self, error: Any, _message: Any) -> None:
        if error is not None and self.error is None:
            self.error = error
        self.remaining -= 1
        if self.remaining == 0:
            self._loop.call_soon_threadsafe(self._settle)

    def _settle(self) -> None:
        if self.future.done():
            return
        if self.error is not None:
            self.future.set_exception(Unavailable(f"Kafka refused an event: {self.error.str()}"))
        else:
            self.future.set_result(None)


class Ingestor:
    def __init__(
        self,
        validator: EventValidator,
        producer: Producer,
        topic: Topic,
        *,
        max_in_flight_events: int = 50_000,
        max_reported_rejections: int = 100_000,
    ) -> None:
        self._validator = validator
        self._producer = producer
        self._topic = topic
        self._max_in_flight = max_in_flight_events
        self._max_rejections = max_reported_rejections
        self._layouts = LayoutScreen(list(validator.rules.values()))

    def _screen(
        self, message: bytes, first_index: int, outcome: Outcome, keep_ids: bool
    ) -> tuple[list[tuple[bytes, bytes]], int]:
        """(key, value) of the valid events of one encoded request message with event ids
        filled in, and how many events it held; rejections go into `outcome`, accepted event
        ids too when `keep_ids`."""
        try:
            spans = split_repeated(message)
        except ValueError as error:
            raise InvalidArgument(f"events: the request is not a valid encoding ({error})",
                                  field="events") from None
        now = time.time()
        # Most events of a batch share a layout checked in numpy; the rest meet the regex.
        layouts = self._layouts.screen(message, spans, now)
        screens = [
            (rules.encoded_event.fullmatch, seconds_ceiling(now + rules.max_future_s))
            for rules in self._validator.rules.values()
        ]
        fresh_ids = _fresh_event_ids(len(spans))
        good: list[tuple[bytes, bytes]] = []
        accepted_ids = outcome.accepted_event_ids
        for number, (start, end) in enumerate(spans):
            layout = layouts[number]
            if layout is not None:
                key_at = start + layout.key_at
                if layout.id_size:
                    value = message[start:end]
                    event_id = value[layout.id_at:layout.id_at + layout.id_size]
                else:
                    event_id = fresh_ids[32 * number:32 * number + 32]
                    value = _EVENT_ID_TAG + event_id + message[start:end]
                if keep_ids:
                    accepted_ids.append(event_id.decode())
                good.append((message[key_at:key_at + layout.key_size], value))
                continue
            record = None
            for fullmatch, ceiling in screens:
                match = fullmatch(message, start, end)
                if match is None:
                    continue
                key, seconds = match.group("key", "seconds")
                if seconds[::-1] <= ceiling:  # else too far ahead: the walk says so
                    if message[start] == _EVENT_ID_TAG[0]:
                        value = message[start:end]
                        event_id = value[2:2 + value[1]]
                    else:
                        # Field 1 was absent: prepended, it is where an encoder writes it.
                        event_id = fresh_ids[32 * number:32 * number + 32]
                        value = _EVENT_ID_TAG + event_id + message[start:end]
                    if keep_ids:
                        accepted_ids.append(event_id.decode())
                    record = (key[1:], value)
                break
            if record is None:
                fresh_id = fresh_ids[32 * number:32 * number + 32].decode()
                record = self._walk(
                    message[start:end], first_index + number, now, outcome, fresh_id, keep_ids
                )
                if record is None:
                    continue
            good.append(record)
        return good, len(spans)

    def _walk(
        self, encoded: bytes, index: int, now: float, outcome: Outcome, fresh_id: str,
        keep_ids: bool,
    ) -> tuple[bytes, bytes] | None:
        """The slow path of one event: decoded, every field checked, encoded again."""
        try:
            event = events_pb2.Event.FromString(encoded)
        except DecodeError:
            self._reject(outcome, index, "", Problem(
                "event", "not a valid flywheel.v1.Event encoding", "malformed_event"
            ))
            return None
        found = self._validator.problems(event, now)
        if found:
            self._reject(outcome, index, event.event_id, found[0])
            return None
        if not event.event_id:
            event.event_id = fresh_id
        if keep_ids:
            outcome.accepted_event_ids.append(event.event_id)
        return event.entity_id.encode(), event.SerializeToString()

    def _reject(self, outcome: Outcome, index: int, event_id: str, problem: Problem) -> None:
        REJECTED.labels(problem.code).inc()
        outcome.rejected += 1
        if len(outcome.rejections) < self._max_rejections:
            outcome.rejections.append(Rejection(index, event_id, problem))

    def _publish(self, records: list[tuple[bytes, bytes]]) -> _Acknowledgements:
        acks = _Acknowledgements(asyncio.get_running_loop(), len(records))
        # Every record gets one delivery report, those never queued too (then this raises).
        self._producer.produce_all(
            self._topic.name, records, standard_headers(self._topic.type_name), acks
        )
        # Reports of earlier chunks, run here rather than on a thread competing for the GIL.
        self._producer.serve_reports()
        return acks

    async def ingest(self, message: bytes, budget: Budget) -> Outcome:
        """One encoded IngestRequest."""
        outcome = Outcome(batches=1)
        good, count = self._screen(message, 0, outcome, keep_ids=True)
        if not count:
            raise InvalidArgument("events is empty", field="events")
        if good:
            await self._wait(self._publish(good).future, budget)
        outcome.accepted = len(good)
        ACCEPTED.inc(len(good))
        return outcome

    async def ingest_stream(self, messages: AsyncIterator[bytes], budget: Budget) -> Outcome:
        """Encoded IngestStreamRequests. Publishes each stream message as it arrives; at most
        `max_in_flight_events` unacknowledged events are held, so memory stays bounded whatever
        the stream's size."""
        outcome = Outcome()
        in_flight: deque[tuple[int, _Acknowledgements]] = deque()
        pending = 0
        seen = 0
        async for message in messages:
            outcome.batches += 1
            good, count = self._screen(message, seen, outcome, keep_ids=False)
            seen += count
            if good:
                in_flight.append((len(good), self._publish(good)))
                pending += len(good)
            while pending > self._max_in_flight:
                count, acks = in_flight.popleft()
                await self._wait(acks.future, budget)
                pending -= count
                outcome.accepted += count
        while in_flight:
            count, acks = in_flight.popleft()
            await self._wait(acks.future, budget)
            outcome.accepted += count
        if seen == 0:
            raise InvalidArgument("events is empty: the stream carried no events", field="events")
        ACCEPTED.inc(outcome.accepted)
        return outcome

    async def _wait(self, future: asyncio.Future[None], budget: Budget) -> None:
        seconds = budget()
        if seconds <= 0:
            raise Unavailable("no time left within the deadline to wait for Kafka")
        try:
            await self._producer.settle(future, seconds)
        except TimeoutError:
            # Its late outcome has no one left to hear it.
            future.add_done_callback(lambda late: late.cancelled() or late.exception())
            raise Unavailable(
                f"Kafka did not acknowledge the events within {seconds:.1f}s; "
                "they may or may not be published (retry with the same event ids)"
            ) from None


# Event.event_id: field 1, length-delimited (its tag byte), then the length of a fresh id.
_EVENT_ID_TAG = b"\x0a\x20"
_VERSION_4 = bytes((byte & 0x0F) | 0x40 for byte in range(256))
_RFC_4122_VARIANT = bytes((byte & 0x3F) | 0x80 for byte in range(256))


def _fresh_event_ids(count: int) -> bytes:
    """`count` random (version 4) UUIDs as 32 hex digits each, back to back."""
    raw = bytearray(os.urandom(16 * count))
    raw[6::16] = raw[6::16].translate(_VERSION_4)
    raw[8::16] = raw[8::16].translate(_RFC_4122_VARIANT)
    return raw.hex().encode()
