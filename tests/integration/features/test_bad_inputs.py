"""The bad-input matrix of the feature store: each case gets its status and a message naming
the field; never UNKNOWN."""

from __future__ import annotations

import math
import random
import time

import grpc
import pytest

from flywheel.bench.workload import random_event
from flywheel.v1 import common_pb2, features_pb2

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def request(entity_type="customer", ids=("a",), names=()):
    return features_pb2.GetOnlineFeaturesRequest(
        entity_type=entity_type, entity_ids=list(ids), feature_names=list(names)
    )


@pytest.mark.parametrize(
    ("case", "message", "code", "field"),
    [
        ("no entity type", request(entity_type=""), INVALID, "entity_type"),
        ("unknown entity type", request(entity_type="robot"), INVALID, "entity_type"),
        ("unknown feature", request(names=["f00", "nope"]), INVALID, "feature_names"),
        ("no entity ids", request(ids=()), INVALID, "entity_ids"),
        ("empty entity id", request(ids=("a", "")), INVALID, "entity_ids"),
        ("too many ids", request(ids=[f"e{i}" for i in range(10_001)]),
         grpc.StatusCode.RESOURCE_EXHAUSTED, "entity_ids"),
    ],
)
async def test_get_online_features_bad_input(features, case, message, code, field) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await features.GetOnlineFeatures(message, timeout=10)
    assert failure.value.code() == code, case
    assert field in failure.value.details(), case


def _bad_row(customer, change):
    event = random_event(customer, "w1", int(time.time() * 1000), random.Random(1), event_id="w")
    change(event)
    return event


def _set(name, kind, value):
    def change(event):
        setattr(event.features[name], kind, value)
    return change


@pytest.mark.parametrize(
    ("case", "change", "field"),
    [
        ("unknown entity type", lambda e: setattr(e, "entity_type", "robot"), "entity_type"),
        ("no entity id", lambda e: setattr(e, "entity_id", ""), "entity_id"),
        ("unknown feature", _set("zzz", "double_value", 1.0), "features.zzz"),
        ("string for double", _set("f03", "string_value", "x"), "features.f03"),
        ("double for int64", _set("visits", "double_value", 1.5), "features.visits"),
        ("NaN", _set("f01", "double_value", math.nan), "features.f01"),
        ("Inf", _set("f02", "double_value", -math.inf), "features.f02"),
        ("no event time", lambda e: e.ClearField("event_time"), "event_time"),
        ("far future", lambda e: e.event_time.FromSeconds(int(time.time()) + 3600), "event_time"),
        ("short vector", lambda e: e.vector.values.pop(), "vector"),
        ("NaN in vector", lambda e: e.vector.values.__setitem__(0, math.nan), "vector"),
        ("empty feature value", lambda e: e.features["f04"].CopyFrom(common_pb2.FeatureValue()),
         "features.f04"),
    ],
)
async def test_write_features_rejects_bad_rows(features, customer, case, change, field) -> None:
    good = random_event(customer, "w2", int(time.time() * 1000), random.Random(2), event_id="g")
    reply = await features.WriteFeatures(
        features_pb2.WriteFeaturesRequest(rows=[good, _bad_row(customer, change)]), timeout=10
    )
    assert reply.written_count == 1, case
    assert len(reply.rejections) == 1, case
    rejection = reply.rejections[0]
    assert (rejection.index, rejection.event_id, rejection.field) == (1, "w", field), case
    assert rejection.reason


async def test_write_features_empty_request(features) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await features.WriteFeatures(features_pb2.WriteFeaturesRequest(), timeout=10)
    assert failure.value.code() == INVALID
    assert "rows" in failure.value.details()


def search(entity_type="customer", vector=None, entity_id=None, k=5):
    message = features_pb2.SearchSimilarRequest(entity_type=entity_type, k=k)
    if vector is not None:
        message.vector.values.extend(vector)
    if entity_id is not None:
        message.entity_id = entity_id
    return message


@pytest.mark.parametrize(
    ("case", "message", "code", "field"),
    [
        ("unknown entity type", search(entity_type="robot", vector=[0.0] * 8), INVALID,
         "entity_type"),
        ("no query", search(), INVALID, "query"),
        ("wrong dimension", search(vector=[0.0] * 3), INVALID, "vector"),
        ("NaN in query", search(vector=[math.nan] + [0.0] * 7), INVALID, "vector"),
        ("Inf in query", search(vector=[math.inf] + [0.0] * 7), INVALID, "vector"),
        ("k zero", search(vector=[0.0] * 8, k=0), INVALID, "k"),
        ("k negative", search(vector=[0.0] * 8, k=-3), INVALID, "k"),
        ("k too large", search(vector=[0.0] * 8, k=1_000_000), INVALID, "k"),
        ("empty entity id", search(entity_id=""), INVALID, "entity_id"),
        ("unknown entity id", search(entity_id="nobody"), grpc.StatusCode.NOT_FOUND,
         "entity_id"),
    ],
)
async def test_search_similar_bad_input(features, case, message, code, field) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await features.SearchSimilar(message, timeout=10)
    assert failure.value.code() == code, case
    assert field in failure.value.details(), case
