"""Two inference replicas on one mesh: both follow the model feed whole, swap to a new
champion within seconds of its announcement with zero failed requests, and leave no consumer
group behind (the feed is read without joining one), whether stopped or restarted."""

from __future__ import annotations

import asyncio
import time

import numpy as np
from confluent_kafka.admin import AdminClient
from inference_support import N_FEATURES, poll_until, publish_change, register, start_inference

from flywheel.common.grpc.client import aio_channel
from flywheel.common.registry import CHAMPION
from flywheel.v1 import prediction_pb2, prediction_pb2_grpc

CALLERS_PER_REPLICA = 4


def groups_of(bootstrap: str, namespace: str) -> list[str]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    listed = admin.list_consumer_groups(request_timeout=10).result(timeout=15)
    return sorted(g.group_id for g in listed.valid if g.group_id.startswith(namespace))


async def test_two_replicas_swap_together_without_failures_or_orphan_groups(
        churn, common, inference_settings, registry, model_v2):
    replicas = [await start_inference(common, inference_settings) for _ in range(2)]
    rows = np.random.default_rng(4).normal(size=(3, N_FEATURES))
    request = prediction_pb2.PredictRequest(model="churn", rows=prediction_pb2.FeatureRows(
        rows=[prediction_pb2.FeatureRow(values=r.tolist()) for r in rows]))
    served: dict[int, list[int]] = {0: [], 1: []}
    failures: list[str] = []
    stop = asyncio.Event()
    try:
        channels = [aio_channel(f"127.0.0.1:{r.port}") for r in replicas]
        async with channels[0] as first, channels[1] as second:
            stubs = [prediction_pb2_grpc.PredictionServiceStub(c) for c in (first, second)]

            async def caller(index: int) -> None:
                while not stop.is_set():
                    try:
                        reply = await stubs[index].Predict(request, timeout=10)
                    except Exception as error:  # noqa: BLE001 - every failure is counted
                        failures.append(repr(error))
                        continue
                    served[index].append(reply.model_version)

            callers = [asyncio.create_task(caller(i)) for i in (0, 1)
                       for _ in range(CALLERS_PER_REPLICA)]
            await poll_until(lambda: all(len(v) > 30 for v in served.values()), 30, "load")

            v2 = register(registry, model_v2, alias=None)
            changes = registry.promote("churn", v2.version, CHAMPION)
            await asyncio.to_thread(publish_change, common, registry, v2.version,
                                    "MODEL_VERSION_CHANGE_PROMOTED", changes)
            announced = time.monotonic()
            await poll_until(lambda: all(r.store.state("churn").champion.version == 2
                                         for r in replicas), 30, "both replicas on v2")
            print(f"both replicas serve v2 {time.monotonic() - announced:.2f} s after the "
                  "announcement")
            counts = {i: len(v) for i, v in served.items()}
            await poll_until(lambda: all(len(served[i]) > counts[i] + 30 for i in served), 30,
                             "load on v2")
            stop.set()
            await asyncio.gather(*callers)
        assert failures == []
        for versions in served.values():
            assert set(versions) == {1, 2}
            first_v2 = versions.index(2)
            assert set(versions[first_v2 + CALLERS_PER_REPLICA:]) == {2}

        # A replica started again reads the feed from the start and serves the champion.
        await replicas[1].stop()
        replicas[1] = await start_inference(common, inference_settings)
        assert replicas[1].store.state("churn").champion.version == 2
    finally:
        for replica in replicas:
            await replica.stop()
    assert groups_of(common.kafka_bootstrap, common.namespace) == []
