"""The ray engine on a real Ray cluster (`ray start --head` as a process): Ray Data reads
exactly the window's training rows from the segments (the same set the local engine trains
on, no shadow row, no holdout row, a duplicate segment read once), Ray Train fits LightGBM
data-parallel on two workers, and the version the controller gated and registered serves;
XGBoost trains and continues its champion there; a `ray://` (Ray Client) address trains on
the cluster too, a lineage mismatch found there comes back as the same error, and a run past
the Ray timeout is cancelled and said so."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from training_kit import FEATURES, Concept, produce, wait_for

from flywheel.common.grpc.client import aio_channel, wait_for_serving_async
from flywheel.inference.app import InferenceApp
from flywheel.inference.settings import InferenceSettings
from flywheel.training.dataset import rows_digest
from flywheel.training.engines import LocalEngine
from flywheel.training.scoring import open_version
from flywheel.v1 import common_pb2, prediction_pb2, prediction_pb2_grpc

MANUAL = "{debounce_seconds: 0}"
TRAINING = ("{window: 800, holdout_fraction: 0.25, min_examples: 300, trainer: lightgbm, "
            "params: {n_estimators: 20, num_leaves: 8}}")


async def _run(app, reason: str):
    run = app.controller.trigger("churn", reason)
    await wait_for(lambda: run.state in ("succeeded", "failed"), 400, f"run {reason!r}")
    assert run.state == "succeeded", run.error
    return run


async def test_ray_run_trains_on_exactly_its_lineage_and_serves(make_app, kafka_bootstrap,
                                                                ray_address, tmp_path):
    app = await make_app(MANUAL, spec_trainer=True, training=TRAINING,
                         settings={"engine": "ray", "ray_address": ray_address,
                                   "ray_workers": 2, "ray_storage": str(tmp_path / "ray")})
    concept = Concept(seed=5)
    # Older rows outside the window, then the window's, with shadow rows among them (the
    # champion's rows repeated by a challenger: never training data).
    examples = concept.examples("old", 300, version=0)
    examples += concept.examples("w", 900, version=0)
    examples += concept.examples("s", 200, version=0, role=common_pb2.MODEL_ROLE_SHADOW)
    produce(kafka_bootstrap, app.topics.labeled, examples)
    await wait_for(lambda: app.dataset.total("churn") >= 1200, 60, "1200 labeled examples")

    on_ray = await _run(app, "on ray")
    assert on_ray.engine == "ray" and on_ray.trainer == "lightgbm"
    train_ids = on_ray.prediction_ids()[: on_ray.training_examples]
    # The window: the newest 800 non-shadow rows; training is all of it but the holdout.
    assert on_ray.training_examples + on_ray.holdout_examples == 800
    assert not any(i.startswith("s") for i in on_ray.prediction_ids())
    # Ray Data's rows were checked against these (count and digest) before Ray Train ran.
    assert on_ray.trained_rows_digest == rows_digest(train_ids)

    # The local engine on the same window trains on the same set.
    app.controller._runner.engine = LocalEngine()
    local = await _run(app, "locally")
    assert local.engine == "local" and local.ranges == on_ray.ranges
    assert local.trained_rows_digest == on_ray.trained_rows_digest
    assert sorted(local.prediction_ids()) == sorted(on_ray.prediction_ids())

    meta = app.registry.get("churn", on_ray.candidate_version)
    assert meta.lineage.trainer == "lightgbm" and meta.native_format == "lightgbm-text"
    assert 0 <= meta.metrics["parity_max_difference"] <= 1e-3
    assert on_ray.promoted

    # The version trained on Ray serves (asked for by number: the local run came after it).
    inference = InferenceApp(app.common, InferenceSettings(grpc_port=0, metrics_port=0))
    await inference.start()
    try:
        await wait_for_serving_async(f"127.0.0.1:{inference.port}", 60.0)
        probe = Concept(seed=9).rows(32)[0]
        async with aio_channel(f"127.0.0.1:{inference.port}") as channel:
            stub = prediction_pb2_grpc.PredictionServiceStub(channel)
            reply = await stub.Predict(prediction_pb2.PredictRequest(
                model="churn", version=meta.version,
                rows=prediction_pb2.FeatureRows(rows=[
                    prediction_pb2.FeatureRow(values=r.tolist()) for r in probe])), timeout=10)
        assert reply.model_version == meta.version
        offline = open_version(app.registry, meta, list(FEATURES)).score(probe)
        assert [p.output.predicted_class for p in reply.predictions] == \
            offline.predicted.tolist()
        assert np.allclose([p.output.probabilities[1] for p in reply.predictions],
                           offline.probabilities[:, 1], atol=1e-6)
    finally:
        await inference.stop()


XGBOOST = ("{window: 600, holdout_fraction: 0.25, min_examples: 300, trainer: xgboost, "
           "mode: fine_tune, params: {n_estimators: 10, fine_tune_estimators: 5, max_depth: 3}}")


async def test_xgboost_trains_and_continues_its_champion_through_ray_train(
        make_app, kafka_bootstrap, ray_address, tmp_path):
    app = await make_app(MANUAL, spec_trainer=True, training=XGBOOST,
                         settings={"engine": "ray", "ray_address": ray_address,
                                   "ray_workers": 2, "ray_storage": str(tmp_path / "ray")})
    concept = Concept(seed=11)
    produce(kafka_bootstrap, app.topics.labeled, concept.examples("a", 700, version=0))
    await wait_for(lambda: app.dataset.total("churn") >= 700, 60, "700 labeled examples")
    first = await _run(app, "first on ray")
    assert first.engine == "ray" and first.training_mode == "scratch"
    produce(kafka_bootstrap, app.topics.labeled, concept.examples("b", 300, version=0))
    await wait_for(lambda: app.dataset.total("churn") >= 1000, 60, "1000 labeled examples")
    second = await _run(app, "continued on ray")
    assert second.training_mode == "fine_tune"
    assert second.continued_from == first.candidate_version
    assert second.trained_rows_digest == rows_digest(
        second.prediction_ids()[: second.training_examples])
    meta = app.registry.get("churn", second.candidate_version)
    assert meta.native_format == "xgboost-json" and meta.lineage.trainer == "xgboost"
    assert 0 <= meta.metrics["parity_max_difference"] <= 1e-3
    # The continued booster holds the champion's rounds and the new ones.
    booster = json.loads(app.registry.read_folder("churn", meta.version, "native")["model.json"])
    rounds = int(booster["learner"]["gradient_booster"]["model"]["gbtree_model_param"]["num_trees"])
    assert rounds == 10 + 5


# Run in a process of its own: this one is connected to the cluster directly, and a process
# holds one Ray connection.
THROUGH_CLIENT = """
import dataclasses, json, sys
from pathlib import Path
from flywheel.bench.train import SPEC, _write_segments
from flywheel.common.errors import FailedPrecondition, Unavailable
from flywheel.common.spec import load_spec
from flywheel.training.dataset import Dataset
from flywheel.training.parity import compare
from flywheel.training.ray_engine import RayEngine
from flywheel.training.trainers import TrainingData, trainer_for

folder, address = Path(sys.argv[1]), sys.argv[2]
_write_segments(folder, 3000, 4)
names = [f"f{i}" for i in range(4)]
(folder / "spec.yaml").write_text(SPEC.format(
    entity=", ".join(f"{{name: {n}}}" for n in names), names=", ".join(names), window=3000,
    trainer="lightgbm"))
model = load_spec(folder / "spec.yaml").models[0]
dataset = Dataset(folder, [model])
dataset.load()
window = dataset.window(model.name, 3000, 0.1)
data = TrainingData(window.X_train, window.y_train, model.task, tuple(model.features))
engine = RayEngine(address, 2, str(folder / "ray"), 300)
fitted = engine.fit(trainer_for(model), data, None, dataset.plan(model, window))
scores = fitted.predict(window.X_holdout)
wrong = dataclasses.replace(dataset.plan(model, window), expected_rows=1)
try:
    engine.fit(trainer_for(model), data, None, wrong)
    refused = ""
except FailedPrecondition as error:
    refused = str(error)
try:
    RayEngine(address, 2, str(folder / "ray"), 0.5).fit(
        trainer_for(model), data, None, dataset.plan(model, window))
    late = ""
except Unavailable as error:
    late = str(error)
print(json.dumps({"rows": len(window.y_train), "late": late,
                  "accuracy": float((scores.predicted == window.y_holdout).mean()),
                  "onnx": len(fitted.to_onnx()), "refused": refused}))
"""


def test_a_ray_client_address_trains_on_the_cluster(ray_client_address, tmp_path):
    done = subprocess.run([sys.executable, "-c", THROUGH_CLIENT, str(tmp_path),
                           ray_client_address], capture_output=True, text=True, timeout=400,
                          check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["rows"] == 2700 and found["accuracy"] > 0.8 and found["onnx"] > 0
    assert "Ray Data read 2700 training rows" in found["refused"]
    assert "do not match the lineage" in found["refused"]
    # A run past FLYWHEEL_TRAINING_RAY_TIMEOUT_S is cancelled on the cluster and said so.
    assert "did not finish within 0.5 s" in found["late"]
    assert "FLYWHEEL_TRAINING_RAY_TIMEOUT_S" in found["late"]
