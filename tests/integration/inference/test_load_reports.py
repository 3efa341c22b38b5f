"""Inference reports every load, and the registry never keeps a refused champion.

Inference and training run in-process on the session's broker, sharing a registry; the
promotion goes through `flywheel models promote` and the training service (a recorded mesh).
A version whose artifact bytes changed after registration is refused by inference (sha256),
reported on flywheel.model-loads.v1, marked REFUSED by training, and the champion alias
returns to the version still serving, announced as a rollback naming the refusal.
"""

from __future__ import annotations

import asyncio
import json

from inference_support import poll_until, register

from flywheel.common.registry import CHAMPION
from flywheel.inference.testing_models import flip_byte
from flywheel.testing.cli import cli_env, record_training, run_flywheel
from flywheel.testing.kafka import read_topic
from flywheel.training.app import TrainingApp
from flywheel.training.settings import TrainingSettings
from flywheel.v1 import common_pb2, events_pb2

REFUSED = common_pb2.MODEL_VERSION_STATUS_REFUSED


async def test_a_refused_champion_returns_to_the_serving_version(
    inference, common, registry, model_v2, tmp_path
):
    training = TrainingApp(common, TrainingSettings(
        grpc_port=0, metrics_port=0, data_dir=tmp_path / "data", check_interval_s=0.2))
    await training.start()
    try:
        home = tmp_path / "home"
        record_training(home, common, training.port)
        env = cli_env(common, home)
        corrupt = register(registry, model_v2, alias=None)
        registry.artifact_path(corrupt).write_bytes(flip_byte(model_v2))

        done = await asyncio.to_thread(
            run_flywheel, ["models", "promote", "churn", str(corrupt.version)], env)
        assert done.returncode == 0, done.stderr
        await poll_until(lambda: registry.get("churn", corrupt.version).status == REFUSED,
                         30, "the refusal to reach the registry")
        await poll_until(lambda: registry.aliases("churn") == {CHAMPION: 1}, 30,
                         "the champion alias back on v1")
        assert inference.store.state("churn").champion.version == 1
        assert "hash" in registry.get("churn", corrupt.version).status_reason

        last = (await asyncio.to_thread(read_topic, common.kafka_bootstrap,
                                        training.topics.model_versions))[-1]
        assert last.change == events_pb2.MODEL_VERSION_CHANGE_ROLLED_BACK
        assert dict(last.aliases) == {CHAMPION: 1}
        assert f"inference refused v{corrupt.version}" in last.reason and "hash" in last.reason

        reports = await asyncio.to_thread(read_topic, common.kafka_bootstrap,
                                          training.topics.model_loads)
        outcomes = {(r.version, r.outcome) for r in reports}
        assert (1, events_pb2.MODEL_LOAD_OUTCOME_LOADED) in outcomes
        assert (corrupt.version, events_pb2.MODEL_LOAD_OUTCOME_REFUSED) in outcomes

        listing = await asyncio.to_thread(run_flywheel, ["models", "list", "--name", "churn"], env)
        assert listing.returncode == 0, listing.stderr
        rows = listing.stdout.splitlines()
        assert any(r.split()[:4] == ["churn", "1", "champion", "ready"] for r in rows), rows
        assert any(r.split()[:4] == ["churn", str(corrupt.version), "-", "refused"]
                   for r in rows), rows
        assert any("refused by inference: hash" in r for r in rows), rows
        listed = json.loads((await asyncio.to_thread(
            run_flywheel, ["models", "list", "--name", "churn", "--json"], env)).stdout)
        by_version = {v["version"]: v for v in listed["models"]["churn"]}
        assert by_version[corrupt.version]["status"] == "refused"
        assert by_version[1]["aliases"] == [CHAMPION]

        again = await asyncio.to_thread(
            run_flywheel, ["models", "promote", "churn", str(corrupt.version)], env)
        assert again.returncode == 1
        assert "FAILED_PRECONDITION" in again.stderr
        assert "MODEL_VERSION_STATUS_REFUSED" in again.stderr
        assert registry.aliases("churn") == {CHAMPION: 1}
    finally:
        await training.stop()
