"""The run store: records that round-trip, interrupted runs on load, bounded retention; the
controller's bookkeeping over it."""

from __future__ import annotations

import json
import math

import pytest

from flywheel.common.errors import Unavailable
from flywheel.common.registry import ModelRegistry
from flywheel.common.spec import load_spec
from flywheel.training.controller import Controller
from flywheel.training.dataset import Dataset
from flywheel.training.gate import GateDecision
from flywheel.training.run_store import RunStore, from_record, to_record
from flywheel.training.runner import (
    FAILED,
    INTERRUPTED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    Candidate,
    TrainingRun,
)
from flywheel.v1 import common_pb2


def finished_run(**changes) -> TrainingRun:
    run = TrainingRun(
        "churn", "every_n_labels: 700 >= 600", state=SUCCEEDED, started_at=1_700_000_000.5,
        finished_at=1_700_000_003.25, candidate_version=4, parent_version=3,
        gate=GateDecision(True, "accuracy", 0.91, 0.88, 250, "promoted: +0.03"),
        promoted=True, promoted_alias="champion",
        ranges=[("flywheel.labeled.v1", 0, 10, 400), ("flywheel.labeled.v1", 2, 0, 380)],
        training_examples=750, holdout_examples=250,
        stage_seconds={"dataset": 0.02, "train": 1.5, "register": 0.01},
        mode="best_of", trainer="lightgbm",
        candidates=[Candidate("scratch", "accuracy", 0.89, True, "promoted", 0),
                    Candidate("fine_tune", "accuracy", 0.91, True, "promoted", 4)],
        dataset_ids=lambda: ["p1", "p2"], dataset_traces=["00-a-b-01"],
    )
    for name, value in changes.items():
        setattr(run, name, value)
    return run


def test_a_run_round_trips_with_its_gate_and_candidates(tmp_path):
    run = finished_run()
    store = RunStore(tmp_path, keep=10)
    store.save(run)

    (loaded,) = RunStore(tmp_path, keep=10).load()
    assert loaded.gate == run.gate and isinstance(loaded.gate, GateDecision)
    assert loaded.candidates == run.candidates and isinstance(loaded.candidates[0], Candidate)
    assert loaded.ranges == run.ranges and isinstance(loaded.ranges[0], tuple)
    assert loaded.prediction_ids() == [] and loaded.dataset_traces == []  # not persisted
    run.dataset_ids, run.dataset_traces = None, []
    assert loaded == run


def test_no_gate_and_a_nan_score_round_trip():
    run = finished_run(state=FAILED, gate=None, error="the training window holds a single class",
                       candidates=[Candidate("scratch", "accuracy", math.nan, False, "refused")])
    back = from_record(json.loads(json.dumps(to_record(run))))
    assert back.gate is None and back.error == run.error
    assert math.isnan(back.candidates[0].score)
    assert "dataset_ids" not in to_record(run)


def test_unknown_keys_are_ignored_and_missing_ones_take_defaults():
    record = to_record(finished_run())
    record["a_field_of_a_newer_service"] = {"x": 1}
    record["gate"]["a_newer_gate_detail"] = 3
    del record["trainer"], record["candidates"], record["stage_seconds"]
    run = from_record(record)
    assert (run.trainer, run.candidates, run.stage_seconds) == ("", [], {})
    assert run.gate.decision == "promoted: +0.03" and run.candidate_version == 4


def test_a_record_that_is_not_a_run_is_refused():
    with pytest.raises(ValueError):
        from_record({"trigger_reason": "manual"})  # no model_name


def test_runs_load_in_the_order_they_were_queued(tmp_path):
    store = RunStore(tmp_path, keep=10)
    runs = [finished_run(run_id=f"r{i}") for i in (3, 1, 2)]
    for run in runs:
        store.save(run)
    store.save(runs[0])  # a later write of the first keeps its place
    assert [r.run_id for r in RunStore(tmp_path, keep=10).load()] == ["r3", "r1", "r2"]


def test_queued_and_running_runs_read_interrupted(tmp_path):
    store = RunStore(tmp_path, keep=10)
    running = finished_run(run_id="running", state=RUNNING, finished_at=0.0, gate=None,
                           candidate_version=0, stage_seconds={"dataset": 0.1})
    store.save(TrainingRun("churn", "manual", run_id="queued"))
    store.save(running)
    store.save(finished_run(run_id="done"))

    loaded = {r.run_id: r for r in RunStore(tmp_path, keep=10).load()}
    assert loaded["queued"].state == INTERRUPTED
    assert loaded["running"].state == INTERRUPTED
    assert "stopped while the run was running" in loaded["running"].error
    assert loaded["running"].stage_seconds == {"dataset": 0.1}  # what it got through
    assert loaded["running"].candidate_version == 0
    assert loaded["done"].state == SUCCEEDED
    # Marked on disk too: the next start reads the same.
    again = {r.run_id: r for r in RunStore(tmp_path, keep=10).load()}
    assert again["queued"].state == INTERRUPTED and again["queued"].error == loaded["queued"].error


def test_an_interrupted_run_names_the_version_it_had_registered(tmp_path):
    registry = ModelRegistry(tmp_path / "registry")
    registry.register("churn", b"onnx", task=common_pb2.MODEL_TASK_BINARY_CLASSIFICATION,
                      entity_type="customer", feature_names=["a"],
                      lineage=common_pb2.Lineage(training_run_id="someone-else"))
    registry.register("churn", b"onnx2", task=common_pb2.MODEL_TASK_BINARY_CLASSIFICATION,
                      entity_type="customer", feature_names=["a"],
                      lineage=common_pb2.Lineage(training_run_id="cut"))
    RunStore(tmp_path / "runs", keep=10).save(TrainingRun("churn", "manual", run_id="cut",
                                                          state=RUNNING))

    (run,) = RunStore(tmp_path / "runs", keep=10, registry=registry).load()
    assert run.state == INTERRUPTED and run.candidate_version == 2
    assert run.error.endswith("it had registered v2")


def test_only_the_newest_runs_are_kept(tmp_path):
    store = RunStore(tmp_path, keep=3)
    store.save(TrainingRun("churn", "manual", run_id="active", state=RUNNING))
    dropped = []
    for i in range(5):
        dropped += store.save(finished_run(run_id=f"r{i}"))
    # The running one is never dropped, even though it is the oldest.
    assert dropped == ["r0", "r1", "r2"]
    assert len(store) == 3
    assert sorted(p.stem for p in tmp_path.glob("*.json")) == ["active", "r3", "r4"]


def test_a_lower_limit_prunes_on_load(tmp_path):
    store = RunStore(tmp_path, keep=10)
    for i in range(6):
        store.save(finished_run(run_id=f"r{i}"))
    assert [r.run_id for r in RunStore(tmp_path, keep=2).load()] == ["r4", "r5"]
    assert len(list(tmp_path.glob("*.json"))) == 2


def test_unreadable_records_and_write_leftovers_do_not_stop_a_start(tmp_path):
    store = RunStore(tmp_path, keep=10)
    store.save(finished_run(run_id="good"))
    (tmp_path / "torn.json").write_text('{"format": 1, "sequ')
    (tmp_path / "alien.json").write_text(json.dumps({"format": 1, "sequence": 5, "run": [1]}))
    (tmp_path / ".good.json.x1y2.tmp").write_text("half a write")

    assert [r.run_id for r in RunStore(tmp_path, keep=10).load()] == ["good"]
    assert not list(tmp_path.glob(".*.tmp"))
    assert (tmp_path / "torn.json").exists()  # left for a person to look at
    # The next run does not reuse a sequence number of a readable record.
    fresh = RunStore(tmp_path, keep=10)
    fresh.load()
    fresh.save(finished_run(run_id="next"))
    assert [r.run_id for r in RunStore(tmp_path, keep=10).load()] == ["good", "next"]


def test_a_new_run_is_queued_state_on_disk(tmp_path):
    store = RunStore(tmp_path, keep=10)
    run = TrainingRun("churn", "manual")
    store.save(run)
    record = json.loads((tmp_path / f"{run.run_id}.json").read_text())
    assert record["format"] == 1 and record["sequence"] == 1
    assert record["run"]["state"] == QUEUED and record["run"]["model_name"] == "churn"


# -- the controller's bookkeeping over the store --------------------------------------------

SPEC = """
entities:
  - name: customer
    features: [{name: a}, {name: b}]
models:
  - name: churn
    entity_type: customer
    task: binary_classification
    features: [a, b]
"""


def controller(tmp_path, keep: int) -> Controller:
    (tmp_path / "spec.yaml").write_text(SPEC)
    spec = load_spec(tmp_path / "spec.yaml")
    # Runner and live gate are not reached by queueing and listing runs.
    return Controller(spec=spec, dataset=Dataset(tmp_path, spec.models),
                      registry=ModelRegistry(tmp_path / "registry"), runner=None,
                      live_gate=None, store=RunStore(tmp_path / "runs", keep=keep))


def test_the_controller_lists_past_runs_and_forgets_the_ones_retention_drops(tmp_path):
    first = controller(tmp_path, keep=2)
    queued = [first.trigger("churn", f"run {i}") for i in range(2)]
    queued[0].state = SUCCEEDED
    first._store.save(queued[0])
    newest = first.trigger("churn", "run 2")
    # The finished one made room; the queued one stays although it is older than the newest.
    assert [r.run_id for r in first.recent()] == [newest.run_id, queued[1].run_id]

    again = controller(tmp_path, keep=2)
    assert again.restore() == 2
    assert [r.run_id for r in again.recent("churn", limit=1)] == [newest.run_id]
    assert {r.state for r in again.recent()} == {INTERRUPTED}
    assert again.recent("other") == []
    assert not again.busy("churn")  # an interrupted run holds no automatic trigger back


def test_a_run_that_cannot_be_recorded_is_refused(tmp_path):
    refusing = controller(tmp_path, keep=2)
    (tmp_path / "runs").write_text("a file where the folder should be")
    with pytest.raises(Unavailable, match="training run store"):
        refusing.trigger("churn", "manual")
    assert refusing.recent() == []
