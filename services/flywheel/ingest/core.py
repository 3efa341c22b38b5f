"""Ingest's domain: validate events, publish the good ones, answer once Kafka acknowledged.

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
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter

from flywheel.common.errors import InvalidArgument, Unavailable
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
    rejections: list[Rejection] = field(default_factory=list)
    batches: int = 0


class _Acknowledgements:
    """Delivery reports of one published chunk, settled into one asyncio future.

    Called from the producer's poll thread; only that thread counts, the loop is told once.
    """

    __slots__ = ("remaining", "error", "future", "_loop")

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

    def _validate(
        self, events: Sequence[events_pb2.Event], first_index: int, outcome: Outcome,
        keep_ids: bool,
    ) -> list[tuple[str, bytes]]:
        """(entity id, encoded event) of the valid events, with event ids filled in;
        rejections go into `outcome`, accepted event ids too when `keep_ids`."""
        good: list[tuple[str, bytes]] = []
        problems = self._validator.problems
        now = time.time()
        fresh_ids = _EventIds()
        for offset, event in enumerate(events):
            # Serialized once: the fast validation path reads these bytes, Kafka gets them.
            encoded = event.SerializeToString()
            found = problems(event, now, encoded)
            if found:
                problem = found[0]
                REJECTED.labels(problem.code).inc()
                if len(outcome.rejections) < self._max_rejections:
                    outcome.rejections.append(
                        Rejection(first_index + offset, event.event_id, problem)
                    )
                continue
            event_id = event.event_id
            if not event_id:
                event_id = fresh_ids.next()
                # Field 1 (event_id) was absent: prepending it is the encoding of the event
                # with the id set, in the field order protobuf writes.
                encoded = _EVENT_ID_TAG + event_id.encode() + encoded
            if keep_ids:
                outcome.accepted_event_ids.append(event_id)
            good.append((event.entity_id, encoded))
        return good

    def _publish(self, events: list[tuple[str, bytes]]) -> _Acknowledgements:
        acks = _Acknowledgements(asyncio.get_running_loop(), len(events))
        headers = standard_headers(self._topic.type_name)
        produce, topic = self._producer.produce_raw, self._topic.name
        sent = 0
        try:
            for key, value in events:
                produce(topic, key, value, headers, acks)
                sent += 1
        finally:
            if sent < len(events):
                # Those never queued will never report; count them off so the future settles.
                for _ in range(len(events) - sent):
                    acks(_NotQueued(), None)
        return acks

    async def ingest(self, events: Sequence[events_pb2.Event], budget: Budget) -> Outcome:
        if not events:
            raise InvalidArgument("events is empty", field="events")
        outcome = Outcome(batches=1)
        good = self._validate(events, 0, outcome, keep_ids=True)
        if good:
            await _wait(self._publish(good).future, budget)
        outcome.accepted = len(good)
        ACCEPTED.inc(len(good))
        return outcome

    async def ingest_stream(
        self, batches: AsyncIterator[Sequence[events_pb2.Event]], budget: Budget
    ) -> Outcome:
        """Publishes each stream message as it arrives; at most `max_in_flight_events`
        unacknowledged events are held, so memory stays bounded whatever the stream's size."""
        outcome = Outcome()
        in_flight: deque[tuple[int, _Acknowledgements]] = deque()
        pending = 0
        seen = 0
        async for events in batches:
            outcome.batches += 1
            good = self._validate(events, seen, outcome, keep_ids=False)
            seen += len(events)
            if good:
                in_flight.append((len(good), self._publish(good)))
                pending += len(good)
            while pending > self._max_in_flight:
                count, acks = in_flight.popleft()
                await _wait(acks.future, budget)
                pending -= count
                outcome.accepted += count
        while in_flight:
            count, acks = in_flight.popleft()
            await _wait(acks.future, budget)
            outcome.accepted += count
        if seen == 0:
            raise InvalidArgument("events is empty: the stream carried no events", field="events")
        ACCEPTED.inc(outcome.accepted)
        return outcome


async def _wait(future: asyncio.Future[None], budget: Budget) -> None:
    seconds = budget()
    if seconds <= 0:
        raise Unavailable("no time left within the deadline to wait for Kafka")
    try:
        await asyncio.wait_for(asyncio.shield(future), seconds)
    except TimeoutError:
        raise Unavailable(
            f"Kafka did not acknowledge the events within {seconds:.1f}s; "
            "they may or may not be published (retry with the same event ids)"
        ) from None


_EVENT_ID_TAG = b"\x0a\x20"  # Event.event_id (field 1, length-delimited), 32 bytes


class _EventIds:
    """uuid4 hex strings, drawing the randomness for many at once."""

    __slots__ = ("_pool", "_at")

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0

    def next(self) -> str:
        if self._at >= len(self._pool):
            self._pool = os.urandom(16 * 256)
            self._at = 0
        raw = bytearray(self._pool[self._at:self._at + 16])
        self._at += 16
        raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
        raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
        return raw.hex()


class _NotQueued:
    def str(self) -> str:  # noqa: A003 - mirrors KafkaError.str()
        return "not queued"
