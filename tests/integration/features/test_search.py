"""SearchSimilar against a brute-force numpy search, and the index across a restart."""

from __future__ import annotations

import random
import time

import numpy as np

from flywheel.bench.workload import random_event
from flywheel.features.app import FeaturesApp
from flywheel.v1 import common_pb2, features_pb2

COUNT = 400
K = 10


def brute_force(matrix: np.ndarray, query: np.ndarray, k: int) -> list[int]:
    distances = ((matrix - query) ** 2).sum(axis=1)
    return list(np.argsort(distances, kind="stable")[:k])


async def _write_vectors(features, customer, seed: int) -> tuple[list[str], np.ndarray]:
    rng = random.Random(seed)
    now_ms = int(time.time() * 1000)
    events = [random_event(customer, f"v{i}", now_ms, rng, event_id=f"v{i}-{seed}")
              for i in range(COUNT)]
    reply = await features.WriteFeatures(features_pb2.WriteFeaturesRequest(rows=events), timeout=10)
    assert not reply.rejections
    ids = [e.entity_id for e in events]
    return ids, np.asarray([list(e.vector.values) for e in events], dtype=np.float32)


async def _top_ids(features, **query) -> list[str]:
    message = features_pb2.SearchSimilarRequest(entity_type="customer", k=K)
    if "vector" in query:
        message.vector.values.extend(query["vector"])
    else:
        message.entity_id = query["entity_id"]
    reply = await features.SearchSimilar(message, timeout=10)
    return [n.entity_id for n in reply.neighbors]


async def test_search_finds_itself_first_and_agrees_with_brute_force(features, customer) -> None:
    ids, matrix = await _write_vectors(features, customer, seed=1)
    for row in range(0, COUNT, 37):
        got = await _top_ids(features, entity_id=ids[row])
        assert got[0] == ids[row]
        assert got == [ids[i] for i in brute_force(matrix, matrix[row], K)]
    query = np.random.default_rng(0).normal(size=8).astype(np.float32)
    reply = await features.SearchSimilar(
        features_pb2.SearchSimilarRequest(
            entity_type="customer", vector=common_pb2.Vector(values=query.tolist()), k=K
        ),
        timeout=10,
    )
    expected = brute_force(matrix, query, K)
    assert [n.entity_id for n in reply.neighbors] == [ids[i] for i in expected]
    want = ((matrix[expected] - query) ** 2).sum(axis=1)
    assert np.allclose([n.distance for n in reply.neighbors], want, rtol=1e-4, atol=1e-5)


async def test_an_update_replaces_the_vector_and_a_restart_keeps_the_index(
    common, features_settings, features, features_app, customer
) -> None:
    ids, _ = await _write_vectors(features, customer, seed=2)
    # Newer events move every vector: the old ones must be gone from the index.
    await _write_vectors(features, customer, seed=3)
    ids, matrix = await _write_vectors(features, customer, seed=4)
    before = await _top_ids(features, entity_id=ids[5])
    assert before == [ids[i] for i in brute_force(matrix, matrix[5], K)]

    features_app.write_snapshots()
    restarted = FeaturesApp(common, features_settings)
    await restarted.start()
    try:
        from flywheel.common.grpc.client import aio_channel, wait_for_serving_async
        from flywheel.v1 import features_pb2_grpc

        await wait_for_serving_async(restarted.target, 60.0)
        channel = aio_channel(restarted.target)
        stub = features_pb2_grpc.FeatureStoreServiceStub(channel)
        assert await _top_ids(stub, entity_id=ids[5]) == before
        assert len(restarted.store.indexes["customer"]) == COUNT
        await channel.close()
    finally:
        await restarted.stop()
