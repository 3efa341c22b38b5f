"""An alias change that cannot be announced changes nothing, on a broker of this module's own
(SIGSTOPped for the change, resumed after; never the session's broker):

- PromoteModelVersion answers UNAVAILABLE naming Kafka and the registry keeps its aliases;
- `flywheel models promote`, through that service (a recorded mesh) or on its own (none),
  exits 1 with one line naming Kafka, and the registry keeps its aliases;
- once the broker is back, the training service re-announces the registry's aliases (an
  announcement that timed out may still have landed), and a promotion goes through.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import grpc
import pytest
from reliability_kit import read_topic, report

from flywheel.common.grpc.client import aio_channel, wait_for_serving_async
from flywheel.common.kafka.topics import Topics
from flywheel.common.registry import CHAMPION
from flywheel.inference.testing_models import logistic_regression_onnx
from flywheel.testing.cli import cli_env, record_training, run_flywheel
from flywheel.training.app import TrainingApp
from flywheel.training.settings import TrainingSettings
from flywheel.v1 import training_pb2, training_pb2_grpc

TIMEOUT_S = 2.0


def last_announcement(bootstrap: str, topics: Topics):
    values = read_topic(bootstrap, topics.model_versions.name, 1)
    return topics.model_versions.decode(values[-1]) if values else None


async def until(check, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = await asyncio.to_thread(check)
        if value:
            return value
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


@pytest.fixture
async def training(private_broker, common, tmp_path):
    common = common.model_copy(update={"kafka_bootstrap": private_broker.bootstrap,
                                       "kafka_timeout_s": TIMEOUT_S})
    app = TrainingApp(common, TrainingSettings(grpc_port=0, metrics_port=0,
                                               data_dir=tmp_path / "data", check_interval_s=0.2))
    await app.start()
    try:
        await wait_for_serving_async(f"127.0.0.1:{app.port}", 60.0)
        yield app
    finally:
        os.kill(private_broker.pid, signal.SIGCONT)
        await app.stop()


async def test_a_promotion_kafka_cannot_take_changes_nothing(training, private_broker, tmp_path):
    app, registry, common = training, training.registry, training.common
    for seed in (1, 2):
        registry.register("churn", logistic_regression_onnx(24, seed=seed), task=1,
                          entity_type="customer", feature_names=[f"f{i:02d}" for i in range(24)])
    await asyncio.to_thread(app.promotions.promote, "churn", 1, CHAMPION, "first champion")
    before = registry.alias_state("churn")
    assert before.aliases == {CHAMPION: 1}
    alone, through_mesh = tmp_path / "alone", tmp_path / "mesh"
    alone.mkdir()
    record_training(through_mesh, common, app.port)

    private_broker.signal(signal.SIGSTOP)
    async with aio_channel(f"127.0.0.1:{app.port}") as channel:
        stub = training_pb2_grpc.TrainingServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await stub.PromoteModelVersion(training_pb2.PromoteModelVersionRequest(
                model_name="churn", version=2), timeout=30)
        assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "Kafka" in failure.value.details() and "not changed" in failure.value.details()
        assert registry.alias_state("churn") == before

        said = {"rpc": failure.value.details()}
        for home in (through_mesh, alone):
            done = await asyncio.to_thread(run_flywheel, ["models", "promote", "churn", "2"],
                                           cli_env(common, home))
            # 3: Kafka found silent before anything was sent; 1: the announcement timed out.
            assert done.returncode in (1, 3), (home.name, done.stdout, done.stderr)
            lines = done.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("flywheel: error:"), done.stderr
            assert "Kafka" in lines[0] and "Traceback" not in done.stderr, lines[0]
            assert registry.alias_state("churn") == before, home.name
            said[f"cli_{home.name}"] = lines[0]

        private_broker.signal(signal.SIGCONT)
        report("alias change, broker SIGSTOPped", **{k: repr(v) for k, v in said.items()})
        # Whatever of a timed-out announcement reached the broker is superseded: the last
        # record per model states the registry's aliases again.
        await until(lambda: not app.promotions.unsettled, 60, "the re-announcement")
        last = await asyncio.to_thread(last_announcement, common.kafka_bootstrap, app.topics)
        assert dict(last.aliases) == {CHAMPION: 1}

        reply = await stub.PromoteModelVersion(training_pb2.PromoteModelVersionRequest(
            model_name="churn", version=2), timeout=30)
        assert reply.previous_version == 1
    assert registry.aliases("churn") == {CHAMPION: 2}
    last = await asyncio.to_thread(last_announcement, common.kafka_bootstrap, app.topics)
    assert dict(last.aliases) == {CHAMPION: 2}
