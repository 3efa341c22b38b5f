"""`flywheel bench features`: GetOnlineFeatures p99 for 1 and for 100 entities, against the
p99 of a raw pipelined redis-py read of the same keys (one HMGET per entity of every
feature's field), at the same concurrency, in the same run.

The feature store runs as its own process (as deployed; `--in-process` runs it inside the
bench's event loop instead, sharing the interpreter with the client) on a fresh namespace,
loaded through WriteFeatures. The calls ask for every feature in the spec's order, which the
store serves from each row's stored encoded entity (flywheel.features.framed); the baseline
reads the per-feature fields of the same rows. Each measurement runs `concurrency` callers
in a loop for `requests` calls in all, twice per side in alternating order, and keeps each
side's better pass; latencies are taken per call on the client. The run's keys are deleted
at the end. Headlines:
p99(ours)/p99(redis) for 1 and 100 entities (target <= 3), and p99(100)/p99(1) of ours
(target <= 3).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--entities", type=int, default=10_000, help="entities loaded")
    parser.add_argument("--requests", type=int, default=3_000, help="calls per measurement")
    parser.add_argument("--concurrency", type=int, default=4, help="callers at once")
    parser.add_argument("--spec", default=None, help="spec file (default FLYWHEEL_SPEC_PATH)")
    parser.add_argument("--in-process", action="store_true",
                        help="run the feature store inside the bench's process")


def run(args: argparse.Namespace) -> dict[str, Any]:
    return asyncio.run(_run(args))


def _percentiles(latencies: list[float]) -> dict[str, float]:
    import numpy as np

    ms = np.asarray(latencies) * 1000.0
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean()), "calls": len(latencies)}


async def _measure(call, batches: list, concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    position = 0

    async def caller() -> None:
        nonlocal position
        while position < len(batches):
            batch = batches[position]
            position += 1
            started = time.perf_counter()
            await call(batch)
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return _percentiles(latencies)


async def _drop_namespace(client, keys) -> None:
    """Deletes the run's keys (its own fresh namespace), so runs do not pile rows up in a
    shared Redis."""
    if not keys.prefix:
        return
    found: list[bytes] = []
    async for key in client.scan_iter(match=keys.namespace_pattern(), count=1_000):
        found.append(key)
        if len(found) >= 1_000:
            await client.unlink(*found)
            found = []
    if found:
        await client.unlink(*found)


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    import redis.asyncio as aioredis

    from flywheel.bench import report
    from flywheel.bench._service import ServiceProcess, bench_common
    from flywheel.bench.workload import random_event
    from flywheel.common.grpc.client import aio_channel, wait_for_serving_async
    from flywheel.common.spec import load_spec
    from flywheel.features.app import FeaturesApp
    from flywheel.features.keys import KeySpace
    from flywheel.features.settings import FeaturesSettings
    from flywheel.v1 import features_pb2, features_pb2_grpc

    entities = getattr(args, "entities", 10_000)
    requests = getattr(args, "requests", 3_000)
    concurrency = getattr(args, "concurrency", 4)
    common = bench_common(args)
    import tempfile

    snapshots = tempfile.mkdtemp(prefix="flywheel-bench-features-")
    in_process = getattr(args, "in_process", False)
    if in_process:
        app = FeaturesApp(common, FeaturesSettings(grpc_port=0, metrics_port=0,
                                                   snapshot_dir=snapshots))
    else:
        app = ServiceProcess("features", common, {"snapshot_dir": snapshots})
    entity = load_spec(common.spec_path).entities[0]
    names = entity.feature_names
    ids = [f"c{i:06d}" for i in range(entities)]
    rng = random.Random(3)
    now_ms = int(time.time() * 1000)
    if in_process:
        await app.start()
    channel = aio_channel(app.target)
    client = aioredis.Redis.from_url(common.redis_url)
    keys = KeySpace(common.redis_key_prefix)
    try:
        await wait_for_serving_async(app.target, 60.0)
        stub = features_pb2_grpc.FeatureStoreServiceStub(channel)
        for start in range(0, entities, 1_000):
            rows = [random_event(entity, i, now_ms, rng) for i in ids[start:start + 1_000]]
            await stub.WriteFeatures(features_pb2.WriteFeaturesRequest(rows=rows), timeout=30)

        async def ours(batch: list[str]) -> None:
            reply = await stub.GetOnlineFeatures(
                features_pb2.GetOnlineFeaturesRequest(entity_type=entity.name, entity_ids=batch),
                timeout=10,
            )
            assert len(reply.entities) == len(batch)

        async def raw(batch: list[str]) -> None:
            pipe = client.pipeline(transaction=False)
            for entity_id in batch:
                pipe.hmget(keys.row(entity.name, entity_id), names)
            rows = await pipe.execute()
            assert len(rows) == len(batch)

        def batches(size: int) -> list[list[str]]:
            return [rng.sample(ids, size) for _ in range(requests)]

        figures: dict[str, Any] = {}
        for size in (1, 100):
            work = batches(size)
            await _measure(ours, work[:200], concurrency)  # warm-up
            await _measure(raw, work[:200], concurrency)
            figures[f"ours_{size}"] = await _measure(ours, work, concurrency)
            figures[f"redis_{size}"] = await _measure(raw, work, concurrency)
            # A second pass in the other order, so neither side always runs warmer.
            again_raw = await _measure(raw, work, concurrency)
            again_ours = await _measure(ours, work, concurrency)
            for key, again in ((f"ours_{size}", again_ours), (f"redis_{size}", again_raw)):
                if again["p99_ms"] < figures[key]["p99_ms"]:
                    figures[key] = again
    finally:
        await channel.close()
        if in_process:
            await app.stop()
        else:
            app.stop()
        await _drop_namespace(client, keys)
        await client.aclose()
        import shutil

        shutil.rmtree(snapshots, ignore_errors=True)

    def p99(key: str) -> float:
        return figures[key]["p99_ms"]

    baseline_name = "raw pipelined redis-py read (HMGET per entity, same keys, same concurrency)"
    results = [
        report.result("features", "GetOnlineFeatures p99 ms, 1 entity", p99("ours_1"),
                      p99("redis_1"), baseline_name, 3.0, "lower",
                      ours=figures["ours_1"], baseline_figures=figures["redis_1"]),
        report.result("features", "GetOnlineFeatures p99 ms, 100 entities", p99("ours_100"),
                      p99("redis_100"), baseline_name, 3.0, "lower",
                      ours=figures["ours_100"], baseline_figures=figures["redis_100"]),
        report.result("features", "GetOnlineFeatures p99 ms, 100 entities vs 1 entity",
                      p99("ours_100"), p99("ours_1"), "GetOnlineFeatures p99, 1 entity", 3.0,
                      "lower"),
    ]
    return report.combined(
        "features", results, entities=entities, requests=requests, concurrency=concurrency,
        server="in-process" if in_process else "own process",
        features_per_entity=len(names), machine=report.machine(),
    )


if __name__ == "__main__":
    from flywheel.bench.report import standalone

    standalone("features", add_arguments, run)
