"""Training runs outlive the training service: a restart over the same data dir answers for
past runs; a run the service stopped under reads interrupted; `flywheel runs` shows them."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
from pathlib import Path

import grpc
import pytest
from training_kit import Concept, produce, wait_for

from flywheel.common.grpc.client import aio_channel
from flywheel.training.gate import GateDecision
from flywheel.training.run_store import RunStore
from flywheel.training.runner import RUNNING, SUCCEEDED, Candidate, TrainingRun
from flywheel.v1 import training_pb2, training_pb2_grpc

ROOT = Path(__file__).resolve().parents[3]
# Every trigger off: runs start only when asked.
MANUAL = "{debounce_seconds: 0}"
DEADLINE_S = 10


class HeldTrainer:
    """Holds the app's trainer inside fit until released: a run the service stops under."""

    def __init__(self, trainer) -> None:
        self.inside = threading.Event()
        self.release = threading.Event()
        trainer.fit = self._fit

    def _fit(self, data, parent=None):
        self.inside.set()
        self.release.wait(120)
        raise RuntimeError("released after the service stopped")


async def _finished(app, stub, run_id: str) -> training_pb2.TrainingRun:
    await wait_for(lambda: app.controller.get(run_id).state not in ("queued", "running"),
                   90, f"run {run_id} to finish")
    reply = await stub.GetTrainingRun(training_pb2.GetTrainingRunRequest(run_id=run_id),
                                      timeout=DEADLINE_S)
    return reply.run


async def _list(stub, **request) -> list[training_pb2.TrainingRun]:
    reply = await stub.ListTrainingRuns(training_pb2.ListTrainingRunsRequest(**request),
                                        timeout=DEADLINE_S)
    return list(reply.runs)


async def test_runs_outlive_a_restart_and_a_cut_run_reads_interrupted(make_app, kafka_bootstrap):
    app = await make_app(MANUAL)
    produce(kafka_bootstrap, app.topics.labeled, Concept(seed=7).examples("a", 500, version=0))
    await wait_for(lambda: app.dataset.total("churn") >= 500, 60, "500 labeled examples")

    async with aio_channel(f"127.0.0.1:{app.port}") as channel:
        stub = training_pb2_grpc.TrainingServiceStub(channel)
        first_id = (await stub.TriggerRetrain(
            training_pb2.TriggerRetrainRequest(model_name="churn", reason="by hand"),
            timeout=DEADLINE_S)).run_id
        before = await _finished(app, stub, first_id)
        assert before.state == training_pb2.TRAINING_RUN_STATE_SUCCEEDED, before.error
        assert before.promoted and before.candidate_version == 1

        # A second run is caught by a stop of the service in the middle of training.
        held = HeldTrainer(app.trainers["churn"])
        cut_id = (await stub.TriggerRetrain(
            training_pb2.TriggerRetrainRequest(model_name="churn", reason="cut short"),
            timeout=DEADLINE_S)).run_id
        await wait_for(held.inside.is_set, 60, "the second run to be training")
    try:
        await app.stop()

        again = await make_app(MANUAL)  # the same data dir and registry
        async with aio_channel(f"127.0.0.1:{again.port}") as channel:
            stub = training_pb2_grpc.TrainingServiceStub(channel)
            after = (await stub.GetTrainingRun(
                training_pb2.GetTrainingRunRequest(run_id=first_id), timeout=DEADLINE_S)).run
            assert after == before  # the same outcome, gate, stages, lineage and times

            cut = (await stub.GetTrainingRun(
                training_pb2.GetTrainingRunRequest(run_id=cut_id), timeout=DEADLINE_S)).run
            assert cut.state == training_pb2.TRAINING_RUN_STATE_INTERRUPTED
            assert "training service stopped while the run was running" in cut.error
            assert "dataset" in cut.stage_seconds and "register" not in cut.stage_seconds
            assert cut.candidate_version == 0 and not cut.promoted
            assert cut.trigger_reason == "cut short"

            assert [r.run_id for r in await _list(stub)] == [cut_id, first_id]
            assert [r.run_id for r in await _list(stub, model_name="churn", limit=1)] == [cut_id]
            with pytest.raises(grpc.aio.AioRpcError) as unknown:
                await _list(stub, model_name="nope")
            assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.aio.AioRpcError) as negative:
                await _list(stub, limit=-1)
            assert negative.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "limit" in negative.value.details()

            # Nothing of the cut run reached the registry, and new runs go on after it.
            assert [v.version for v in again.registry.versions("churn")] == [1]
            assert not list(Path(again.registry.root, "churn").glob(".staging-*"))
            third_id = (await stub.TriggerRetrain(
                training_pb2.TriggerRetrainRequest(model_name="churn"), timeout=DEADLINE_S)).run_id
            third = await _finished(again, stub, third_id)
            assert third.state == training_pb2.TRAINING_RUN_STATE_SUCCEEDED, third.error
            assert third.candidate_version == 2
            assert [r.run_id for r in await _list(stub)] == [third_id, cut_id, first_id]
    finally:
        held.release.set()


def _write_past_runs(data_dir: Path) -> tuple[TrainingRun, TrainingRun]:
    """What an earlier lifetime of the service left: one run done, one cut while running."""
    done = TrainingRun(
        "churn", "every_n_labels: 700 >= 600", state=SUCCEEDED, started_at=1_765_000_000.0,
        finished_at=1_765_000_002.5, candidate_version=3, parent_version=2,
        gate=GateDecision(True, "accuracy", 0.93, 0.9, 250, "promoted: +0.03"),
        promoted=True, promoted_alias="champion", training_examples=750,
        holdout_examples=250, stage_seconds={"train": 1.25, "dataset": 0.5},
        mode="scratch", trainer="logistic",
        candidates=[Candidate("scratch", "accuracy", 0.93, True, "promoted: +0.03", 3)],
    )
    cut = TrainingRun("churn", "manual", state=RUNNING, started_at=1_765_000_100.0,
                      stage_seconds={"dataset": 0.5})
    store = RunStore(data_dir / "runs", keep=10)
    store.save(done)
    store.save(cut)
    return done, cut


async def _flywheel(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "flywheel.cli", *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode, out.decode(), err.decode()


async def test_flywheel_runs_list_and_show(make_app, tmp_path):
    done, cut = _write_past_runs(tmp_path / "data")  # the data dir make_app uses
    app = await make_app(MANUAL)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    env.update(FLYWHEEL_HOME=str(tmp_path / "home"),  # no mesh state: the address from env
               FLYWHEEL_TRAINING_GRPC_HOST="127.0.0.1",
               FLYWHEEL_TRAINING_GRPC_PORT=str(app.port),
               PYTHONPATH=str(ROOT / "services"))

    code, out, err = await _flywheel(env, "runs", "list", "--json")
    assert code == 0, err
    runs = json.loads(out.strip().splitlines()[-1])["runs"]
    assert [(r["run_id"], r["state"]) for r in runs] == [(cut.run_id, "interrupted"),
                                                         (done.run_id, "succeeded")]
    shown = runs[1]
    assert shown["candidate_version"] == 3 and shown["promoted"] and shown["seconds"] == 2.5
    assert shown["gate"]["decision"] == "promoted: +0.03" and shown["trainer"] == "logistic"
    assert shown["candidates"] == [{"mode": "scratch", "metric": "accuracy", "score": 0.93,
                                    "passed": True, "decision": "promoted: +0.03",
                                    "version": 3}]
    assert shown["started_at"].endswith("Z")

    code, out, err = await _flywheel(env, "runs", "list", "--model", "churn")
    assert code == 0, err
    header, *rows = out.strip().splitlines()
    assert header.split()[:3] == ["run", "model", "state"]
    assert rows[0].split()[:3] == [cut.run_id, "churn", "interrupted"]
    assert rows[1].split()[:5] == [done.run_id, "churn", "succeeded", "scratch", "v3"]

    code, out, err = await _flywheel(env, "runs", "show", cut.run_id, "--json")
    assert code == 0, err
    record = json.loads(out.strip().splitlines()[-1])
    assert record["state"] == "interrupted" and "stopped" in record["error"]
    assert record["stage_seconds"] == {"dataset": 0.5} and record["finished_at"] is None

    code, out, err = await _flywheel(env, "runs", "show", done.run_id)
    assert code == 0, err
    lines = dict(line.split(None, 1) for line in out.strip().splitlines())
    assert lines["state"] == "succeeded" and lines["gate"] == "promoted: +0.03"
    assert lines["stages"] == "dataset 0.50 s, train 1.25 s"

    code, out, err = await _flywheel(env, "runs", "show", "no-such-run")
    assert code == 1 and not out
    assert "no training run 'no-such-run'" in err
