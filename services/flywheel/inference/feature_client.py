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
"""

from __future__ import annotations

import asyncio
import contextvars
from dataclasses import dataclass, field

import grpc

from flywheel.common.context import current_request_id, current_traceparent
from flywheel.common.errors import DeadlineExceeded, FailedPrecondition, Unavailable
from flywheel.common.grpc.client import aio_channel
from flywheel.common.grpc.interceptors import REQUEST_ID_KEY, TRACEPARENT_KEY
from flywheel.inference.predictor import StoredEntity
from flywheel.v1 import common_pb2, features_pb2, features_pb2_grpc

FOUND = features_pb2.FEATURE_STATUS_FOUND


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


@dataclass
class _Group:
    """Fetches waiting for one shared call: same entity type and feature names."""

    entity_type: str
    feature_names: list[str]
    ids: dict[str, None] = field(default_factory=dict)  # the union, in first-seen order
    waiters: list[tuple[list[str], asyncio.Future]] = field(default_factory=list)
    sent: bool = False
    # The first fetch's context (its request id): the shared call runs in it.
    context: contextvars.Context = field(default_factory=contextvars.copy_context)
    task: asyncio.Task | None = None

    def abandoned(self) -> None:
        """A fetch gave up (its caller's deadline passed): once every fetch of the call has,
        the call is cancelled too, so no work outlives the callers that wanted it."""
        if self.task is not None and all(f.done() for _, f in self.waiters):
            self.task.cancel()


class FeatureStoreClient:
    def __init__(
        self, target: str, timeout_s: float, max_message_bytes: int, *,
        max_ids_per_call: int = 4096,
        max_calls_in_flight: int = 1,
    ) -> None:
        self._target = target
        self._timeout_s = timeout_s
        self._max_ids = max_ids_per_call
        self._channel = aio_channel(target, max_message_bytes)
        self._stub = features_pb2_grpc.FeatureStoreServiceStub(self._channel)
        self._max_in_flight = max_calls_in_flight
        self._open: dict[tuple[str, tuple[str, ...]], _Group] = {}
        self._in_flight: dict[tuple[str, tuple[str, ...]], int] = {}

    async def fetch(
        self, entity_type: str, entity_ids: list[str], feature_names: list[str]
    ) -> list[StoredEntity]:
        """One StoredEntity per id, in order; shares a call with concurrent fetches."""
        if len(entity_ids) >= self._max_ids:
            return await self._call(entity_type, entity_ids, feature_names)
        key = (entity_type, tuple(feature_names))
        group = self._open.get(key)
        if group is not None and len(group.ids) + len(entity_ids) > self._max_ids:
            self._flush(key, group)
            group = None
        if group is None:
            group = self._open[key] = _Group(entity_type, list(feature_names))
            if self._in_flight.get(key, 0) < self._max_in_flight:
                asyncio.get_running_loop().call_soon(self._flush, key, group)
            # else: the next call to finish flushes it
        for entity_id in entity_ids:
            group.ids[entity_id] = None
        future: asyncio.Future[dict[str, StoredEntity]] = asyncio.get_running_loop().create_future()
        group.waiters.append((entity_ids, future))
        try:
            by_id = await future
        except asyncio.CancelledError:
            group.abandoned()
            raise
        return [by_id[entity_id] for entity_id in entity_ids]

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
        waiters = [(ids, f) for ids, f in group.waiters if not f.cancelled()]
        if not waiters:
            return
        ids = list(group.ids)
        try:
            stored = await self._call(group.entity_type, ids, group.feature_names)
        except BaseException as error:  # handed to every fetch of the call
            for _, future in waiters:
                if not future.done():
                    future.set_exception(error)
            if isinstance(error, asyncio.CancelledError):
                raise
            return
        by_id = {entity.entity_id: entity for entity in stored}
        for _, future in waiters:
            if not future.done():
                future.set_result(by_id)

    async def _call(
        self, entity_type: str, entity_ids: list[str], feature_names: list[str]
    ) -> list[StoredEntity]:
        request = features_pb2.GetOnlineFeaturesRequest(
            entity_type=entity_type, entity_ids=entity_ids, feature_names=feature_names
        )
        metadata = ((REQUEST_ID_KEY, current_request_id()), (TRACEPARENT_KEY, current_traceparent()))
        try:
            reply = await self._stub.GetOnlineFeatures(
                request, timeout=self._timeout_s, metadata=metadata
            )
        except grpc.aio.AioRpcError as error:
            code = error.code()
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise DeadlineExceeded(
                    f"the feature store did not answer within {self._timeout_s}s"
                ) from None
            if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND):
                raise FailedPrecondition(
                    f"the feature store refused the model's features: {error.details()}"
                ) from None
            raise Unavailable(f"the feature store is unavailable: {error.details()}") from None
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

    async def close(self) -> None:
        await self._channel.close()

