"""Hot swap under load: Predict calls never stop while v2 and then a corrupt v3 are
announced. Zero failed requests, every response names exactly one version, v3 is refused
and v2 keeps serving."""

from __future__ import annotations

import asyncio

import numpy as np
from inference_support import N_FEATURES, poll_until, publish_change, register
from prometheus_client import REGISTRY

from flywheel.common.grpc.client import aio_channel
from flywheel.common.registry import CHAMPION
from flywheel.inference.testing_models import flip_byte
from flywheel.v1 import prediction_pb2, prediction_pb2_grpc

WORKERS = 8


def refused(reason: str) -> float:
    return REGISTRY.get_sample_value(
        "flywheel_inference_versions_refused_total", {"model": "churn", "reason": reason}) or 0.0


async def test_swaps_under_load_fail_nothing_and_refuse_a_corrupt_version(
    inference, common, registry, model_v1, model_v2
):
    rows = np.random.default_rng(9).normal(size=(3, N_FEATURES))
    request = prediction_pb2.PredictRequest(model="churn", rows=prediction_pb2.FeatureRows(
        rows=[prediction_pb2.FeatureRow(values=r.tolist()) for r in rows]))
    versions: list[int] = []
    failures: list[str] = []
    stop = asyncio.Event()

    async with aio_channel(f"127.0.0.1:{inference.port}") as channel:
        stub = prediction_pb2_grpc.PredictionServiceStub(channel)

        async def caller() -> None:
            while not stop.is_set():
                try:
                    reply = await stub.Predict(request, timeout=10)
                except Exception as error:  # noqa: BLE001 - every failure is counted
                    failures.append(repr(error))
                    continue
                assert len(reply.predictions) == len(rows)
                assert all(p.prediction_id for p in reply.predictions)
                versions.append(reply.model_version)

        callers = [asyncio.create_task(caller()) for _ in range(WORKERS)]
        await poll_until(lambda: len(versions) > 50, 30, "load on v1")

        v2 = register(registry, model_v2, alias=None)
        changes = registry.promote("churn", v2.version, CHAMPION)
        await asyncio.to_thread(publish_change, common, registry, v2.version,
                                "MODEL_VERSION_CHANGE_PROMOTED", changes)
        await poll_until(lambda: inference.store.state("churn").champion.version == 2, 30,
                         "the swap to v2")
        served_before_v3 = len(versions)
        await poll_until(lambda: len(versions) > served_before_v3 + 50, 30, "load on v2")

        hash_refusals = refused("hash")
        v3 = register(registry, model_v1, alias=None)
        registry.artifact_path(v3).write_bytes(flip_byte(model_v1))
        changes = registry.promote("churn", v3.version, CHAMPION)
        await asyncio.to_thread(publish_change, common, registry, v3.version,
                                "MODEL_VERSION_CHANGE_PROMOTED", changes)
        await poll_until(lambda: refused("hash") > hash_refusals, 30, "v3 to be refused")
        after_v3 = len(versions)
        await poll_until(lambda: len(versions) > after_v3 + 50, 30, "load after v3")
        stop.set()
        await asyncio.gather(*callers)

    assert failures == []
    assert set(versions) == {1, 2}
    first_v2 = versions.index(2)
    assert set(versions[first_v2 + WORKERS:]) == {2}  # once swapped, v1 only for in-flight calls
    assert versions[after_v3:] and set(versions[after_v3:]) == {2}
    assert inference.store.state("churn").champion.version == 2
    assert 3 not in inference.store.state("churn").by_version()
