"""Coalescing of concurrent feature fetches: one call for many fetches, each its own rows;
each fetch answered within its caller's deadline, a store that does not answer named."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from flywheel.common.context import deadline_var
from flywheel.common.errors import DeadlineExceeded, FailedPrecondition, Unavailable
from flywheel.inference.feature_client import FeatureStoreClient
from flywheel.inference.predictor import StoredEntity


class FakeStore:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.fail = fail

    async def __call__(self, entity_type, entity_ids, feature_names, timeout_s):
        self.calls.append(list(entity_ids))
        await asyncio.sleep(0.01)
        if self.fail:
            raise Unavailable("the feature store is unavailable")
        return [StoredEntity(e, not e.startswith("x"), [float(len(e))]) for e in entity_ids]


def client(store: FakeStore, **kwargs) -> FeatureStoreClient:
    made = FeatureStoreClient("127.0.0.1:1", 1.0, 1 << 20, **kwargs)
    made._call = store  # type: ignore[method-assign]
    return made


async def test_concurrent_fetches_share_calls_and_get_their_own_ids():
    store = FakeStore()
    features = client(store)
    asks = [[f"e{i}", f"e{i + 1}", "x-missing"] for i in range(30)]
    answers = await asyncio.gather(*(features.fetch("customer", ids, ["f"]) for ids in asks))
    for ids, answer in zip(asks, answers):
        assert [a.entity_id for a in answer] == ids
        assert [a.found for a in answer] == [True, True, False]
    assert len(store.calls) < len(asks)
    for call in store.calls:
        assert len(call) == len(set(call))  # the union, each id once
    alone = await features.fetch("customer", ["solo"], ["f"])
    assert alone[0].entity_id == "solo" and store.calls[-1] == ["solo"]


async def test_other_features_are_never_mixed_and_errors_reach_every_fetch():
    store = FakeStore()
    features = client(store)
    await asyncio.gather(features.fetch("customer", ["e1"], ["f"]),
                         features.fetch("customer", ["e2"], ["g"]))
    assert store.calls == [["e1"], ["e2"]]
    failing = client(FakeStore(fail=True))
    results = await asyncio.gather(*(failing.fetch("customer", [f"e{i}"], ["f"]) for i in range(5)),
                                   return_exceptions=True)
    assert all(isinstance(r, Unavailable) for r in results)


async def test_the_id_limit_splits_calls():
    store = FakeStore()
    features = client(store, max_ids_per_call=4)
    await asyncio.gather(*(features.fetch("customer", [f"e{i}", f"k{i}"], ["f"]) for i in range(6)))
    assert all(len(call) <= 4 for call in store.calls)
    assert sorted(e for call in store.calls for e in call) == sorted(
        [f"e{i}" for i in range(6)] + [f"k{i}" for i in range(6)])


class StalledStore:
    """A feature store that never answers: each call lasts its whole timeout, then fails as
    the gRPC client does (DEADLINE_EXCEEDED, mapped by the client)."""

    def __init__(self, features: FeatureStoreClient) -> None:
        self.timeouts: list[float] = []
        self._features = features

    async def __call__(self, entity_type, entity_ids, feature_names, timeout_s):
        self.timeouts.append(timeout_s)
        await asyncio.sleep(timeout_s)
        raise self._features._dependency.did_not_answer(timeout_s)


def stalled(**kwargs) -> tuple[FeatureStoreClient, StalledStore]:
    made = FeatureStoreClient("127.0.0.1:1", 2.0, 1 << 20, **kwargs)
    store = StalledStore(made)
    made._call = store  # type: ignore[method-assign]
    return made, store


async def fetch_within(features: FeatureStoreClient, entity_id: str, deadline_s: float | None):
    """A fetch made by a caller with `deadline_s` left (None: no deadline); (error, seconds)."""
    if deadline_s is not None:
        deadline_var.set(time.monotonic() + deadline_s)  # this task's own context
    started = time.monotonic()
    try:
        await features.fetch("customer", [entity_id], ["f"])
    except Exception as error:  # noqa: BLE001 - the outcome is what the test looks at
        return error, time.monotonic() - started
    raise AssertionError("a stalled store answered")


async def test_a_stalled_store_is_unavailable_to_each_fetch_within_its_own_deadline():
    features, store = stalled()
    short, long, unbounded = await asyncio.gather(
        fetch_within(features, "e1", 0.4), fetch_within(features, "e2", 1.5),
        fetch_within(features, "e3", None))
    assert len(store.timeouts) == 1  # one shared call, as long as the latest fetch may wait
    assert store.timeouts[0] == pytest.approx(2.0, abs=0.05)
    for (error, took), deadline in ((short, 0.4), (long, 1.5), (unbounded, 2.2)):
        assert isinstance(error, Unavailable), error
        assert error.message.startswith("the feature store at 127.0.0.1:1 did not answer within")
        assert took < deadline


async def test_a_fetch_queued_behind_a_call_in_flight_is_answered_at_its_deadline():
    features, store = stalled(max_calls_in_flight=1)
    first = asyncio.create_task(fetch_within(features, "e1", None))
    await asyncio.sleep(0.05)  # its call is in flight
    error, took = await fetch_within(features, "e2", 0.3)
    assert isinstance(error, Unavailable) and took < 0.3
    assert len(store.timeouts) == 1  # never sent: it gave up while queued
    first.cancel()


async def test_a_caller_without_time_left_is_deadline_exceeded_without_a_call():
    features, store = stalled()
    error, _ = await fetch_within(features, "e1", -0.01)
    assert isinstance(error, DeadlineExceeded)
    assert store.timeouts == []


async def test_the_stores_statuses_map_to_what_the_caller_should_hear():
    features = FeatureStoreClient("127.0.0.1:1", 2.0, 1 << 20)

    def status(code, details):
        return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)

    late = features._error_of(status(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"), 1.8)
    assert isinstance(late, Unavailable)
    assert late.message == "the feature store at 127.0.0.1:1 did not answer within 1.8 s"
    down = features._error_of(status(grpc.StatusCode.UNAVAILABLE,
                                     "Redis at 127.0.0.1:7 did not answer within 1.6 s"), 1.8)
    assert isinstance(down, Unavailable)
    assert down.message == ("the feature store at 127.0.0.1:1 is unavailable: "
                            "Redis at 127.0.0.1:7 did not answer within 1.6 s")
    refused = features._error_of(status(grpc.StatusCode.INVALID_ARGUMENT, "feature_names: x"), 1)
    assert isinstance(refused, FailedPrecondition)
    await features.close()
