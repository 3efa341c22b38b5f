"""gRPC adapter to flywheel.v1.FeatureStoreService.GetOnlineFeatures (every call has a deadline).

Concurrent fetches are coalesced: fetches for the same entity type and feature names share one
GetOnlineFeatures call over the union of their ids (at most `max_ids_per_call`), and each
caller gets exactly its own ids back, in its order. At most `max_calls_in_flight` calls per
entity type and feature names run at once (a call full to `max_ids_per_call` goes at once);
fetches made meanwhile wait for the next call, so the calls grow with the load (alone, a fetch
goes out at the next loop iteration). A Predict then costs the feature store (and this
process) a fraction of a gRPC round trip under load. A failed call fails every fetch that
shared it; a call whose fetches all gave up is cancelled; the shared call carries the request
id of the first of them.

Deadlines (the rule of `flywheel.common.dependency`): each fetch may wait its budget, the
smaller of `timeout_s` and its caller's remaining time less a margin to answer in; a shared
call waits as long as the latest of its fetches may, and a fetch that must hear back sooner
(or whose call waits behind one in flight) is answered at its own deadline. A feature store
that does not answer in time, or cannot be reached, is Unavailable naming it ("the feature
store at host:port did not answer within 1.8 s"), never DEADLINE_EXCEEDED: the caller still
has time to hear it. Only a caller whose deadline leaves no time to ask gets DeadlineExceeded.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from dataclasses import dataclass, field

import grpc

from flywheel.common import tracing
from flywheel.common.context import current_request_id
from flywheel.common.dependency import Dependency
from flywheel.common.errors import FailedPrecondition, FlywheelError
from flywheel.common.grpc.client import aio_channel
from flywheel.common.grpc.interceptors import REQUEST_ID_KEY
from flywheel.common.settings import GrpcSecuritySettings
from flywheel.inference.predictor import StoredEntity
from flywheel.v1 import common_pb2, features_pb2, features_pb2_grpc

FOUND = features_pb2.FEATURE_STATUS_FOUND
# A fetch whose deadline comes this much (or less) before its shared call's relies on the
# call's own timeout, within the margin its budget keeps, instead of a timer of its own.
_DEADLINE_SLACK_S = 0.005


def plain(value: common_pb2.FeatureValue) -> float | str | None:
    """A stored value as the predictor reads it: int64 and bool as numbers (bool as 0 or 1),
    a string as itself (a categorical feature's value, encoded by the version that reads it),
    None when unset."""
    kind = value.WhichOneof("kind")
    if kind == "double_value":
        return value.double_value
    if kind == "int64_value":
        return float(value.int64_value)
    if kind == "bool_value":
        return 1.0 if value.bool_value else 0.0
    if kind == "string_value":
        return value.string_value
    return None


@dataclass(slots=True)
class _Fetch:
    """One fetch waiting for a shared call: its ids, its answer, and by when it needs it."""

    ids: list[str]
    future: asyncio.Future
    deadline: float  # on the time.monotonic() clock
    budget_s: float
    timer: asyncio.TimerHandle | None = None


@dataclass
class _Group:
    """Fetches waiting for one shared call: same entity type and feature names."""

    entity_type: str
    feature_names: list[str]
    ids: dict[str, None] = field(default_factory=dict)  # the union, in first-seen order
    waiters: list[_Fetch] = field(default_factory=list)
    sent: bool = False
    queued: bool = False  # behind the calls in flight: flushed when one of them ends
    # The first fetch's context (its request id): the shared call runs in it.
    context: contextvars.Context = field(default_factory=contextvars.copy_context)
    task: asyncio.Task | None = None

    def abandoned(self) -> None:
        """A fetch gave up (its caller's deadline passed): once every fetch of the call has,
        the call is cancelled too, so no work outlives the callers that wanted it."""
        if self.task is not None and all(f.future.done() for f in self.waiters):
            self.task.cancel()


class FeatureStoreClient:
    def __init__(
        self, target: str, timeout_s: float, max_message_bytes: int, *,
        max_ids_per_call: int = 4096,
        max_calls_in_flight: int = 1,
        security: GrpcSecuritySettings | None = None,
    ) -> None:
        self._target = target
        self._dependency = Dependency(f"the feature store at {target}", timeout_s)
        self._max_ids = max_ids_per_call
        self._channel = aio_channel(target, max_message_bytes, security)
        self._stub = features_pb2_grpc.FeatureStoreServiceStub(self._channel)
        self._max_in_flight = max_calls_in_flight
        self._open: dict[tuple[str, tuple[str, ...]], _Group] = {}
        self._in_flight: dict[tuple[str, tuple[str, ...]], int] = {}

    async def fetch(
        self, entity_type: str, entity_ids: list[str], feature_names: list[str]
    ) -> list[StoredEntity]:
        """One StoredEntity per id, in order; shares a call with concurrent fetches."""
        budget = self._dependency.budget()
        if len(entity_ids) >= self._max_ids:
            return await self._call(entity_type, entity_ids, feature_names, budget)
        key = (entity_type, tuple(feature_names))
        group = self._open.get(key)
        if group is not None and len(group.ids) + len(entity_ids) > self._max_ids:
            self._flush(key, group)
            group = None
        if group is None:
            group = self._open[key] = _Group(entity_type, list(feature_names))
            if self._in_flight.get(key, 0) < self._max_in_flight:
                asyncio.get_running_loop().call_soon(self._flush, key, group)
            else:
                group.queued = True  # the next call to finish flushes it
        for entity_id in entity_ids:
            group.ids[entity_id] = None
        future: asyncio.Future[dict[str, StoredEntity]] = asyncio.get_running_loop().create_future()
        fetch = _Fetch(entity_ids, future, time.monotonic() + budget, budget)
        group.waiters.append(fetch)
        if group.queued:
            self._answer_at_deadline(fetch)
        try:
            by_id = await future
        except BaseException:  # its caller gave up (cancelled), or no answer came in time
            group.abandoned()
            raise
        finally:
            if fetch.timer is not None:
                fetch.timer.cancel()
        return [by_id[entity_id] for entity_id in entity_ids]

    def _answer_at_deadline(self, fetch: _Fetch) -> None:
        if fetch.timer is None:
            fetch.timer = asyncio.get_running_loop().call_later(
                fetch.deadline - time.monotonic(), self._expire, fetch
            )

    def _expire(self, fetch: _Fetch) -> None:
        if not fetch.future.done():
            fetch.future.set_exception(self._dependency.did_not_answer(fetch.budget_s))

    def _flush(self, key: tuple, group: _Group) -> None:
        if self._open.get(key) is group:
            del self._open[key]
        if group.sent or not group.waiters:
            return
        group.sent = True  # a full group is flushed early; its call_soon then finds it sent
        self._in_flight[key] = self._in_flight.get(key, 0) + 1
        task = asyncio.get_running_loop().create_task(self._serve(group), context=group.context)
        task.add_done_callback(lambda t: self._call_done(key, t))
        group.task = task

    def _call_done(self, key: tuple, task: asyncio.Task) -> None:
        if not task.cancelled():
            task.exception()  # the error went to the waiting fetches; retrieved, not logged
        left = self._in_flight[key] - 1
        if left:
            self._in_flight[key] = left
        else:
            del self._in_flight[key]
        waiting = self._open.get(key)
        if waiting is not None and left < self._max_in_flight:
            self._flush(key, waiting)

    async def _serve(self, group: _Group) -> None:
        waiters = [f for f in group.waiters if not f.future.done()]
        if not waiters:
            return
        deadline = max(f.deadline for f in waiters)
        for fetch in waiters:
            if fetch.deadline < deadline - _DEADLINE_SLACK_S:
                self._answer_at_deadline(fetch)
        ids = list(group.ids)
        timeout_s = max(deadline - time.monotonic(), 0.0)
        try:
            stored = await self._call(group.entity_type, ids, group.feature_names, timeout_s)
        except BaseException as error:  # handed to every fetch of the call
            for fetch in waiters:
                if not fetch.future.done():
                    fetch.future.set_exception(error)
            if isinstance(error, asyncio.CancelledError):
                raise
            return
        by_id = {entity.entity_id: entity for entity in stored}
        for fetch in waiters:
            if not fetch.future.done():
                fetch.future.set_result(by_id)

    async def _call(
        self, entity_type: str, entity_ids: list[str], feature_names: list[str],
        timeout_s: float,
    ) -> list[StoredEntity]:
        request = features_pb2.GetOnlineFeaturesRequest(
            entity_type=entity_type, entity_ids=entity_ids, feature_names=feature_names
        )
        with tracing.span("GetOnlineFeatures", {"flywheel.entities": len(entity_ids)},
                          tracing.SpanKind.CLIENT):
            metadata = ((REQUEST_ID_KEY, current_request_id()), *tracing.inject().items())
            try:
                reply = await self._stub.GetOnlineFeatures(
                    request, timeout=timeout_s, metadata=metadata
                )
            except grpc.aio.AioRpcError as error:
                raise self._error_of(error, timeout_s) from None
        by_id = {entity.entity_id: entity for entity in reply.entities}
        result = []
        for entity_id in entity_ids:
            entity = by_id.get(entity_id)
            if entity is None or entity.status != FOUND:
                result.append(StoredEntity(entity_id, False, ()))
            else:
                result.append(StoredEntity(entity_id, True, [
                    v.double_value if v.HasField("double_value") else plain(v)
                    for v in entity.values
                ]))
        return result

    def _error_of(self, error: grpc.aio.AioRpcError, timeout_s: float) -> FlywheelError:
        """A failed call as the caller should hear it: the model's features refused is
        FAILED_PRECONDITION; anything else is the feature store unavailable, named (its
        DEADLINE_EXCEEDED is the timeout this client gave it, not the caller's deadline)."""
        code = error.code()
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return self._dependency.did_not_answer(timeout_s)
        if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND):
            return FailedPrecondition(
                f"the feature store refused the model's features: {error.details()}"
            )
        return self._dependency.unavailable(error.details() or code.name)

    async def close(self) -> None:
        await self._channel.close()

