"""Coalescing of concurrent feature fetches: one call for many fetches, each its own rows."""

from __future__ import annotations

import asyncio

from flywheel.common.errors import Unavailable
from flywheel.inference.feature_client import FeatureStoreClient
from flywheel.inference.predictor import StoredEntity


class FakeStore:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.fail = fail

    async def __call__(self, entity_type, entity_ids, feature_names):
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
