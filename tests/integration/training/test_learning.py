"""The learning half against the real broker: every built-in trainer trains, exports, passes
the parity check and serves; fine_tune continues the champion; best_of promotes the better;
a model brought as ONNX only is fine-tuned from scratch, and says why; categorical and int
features reach training as they were served."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest
from training_kit import FEATURES, labeled, produce, wait_for

from flywheel.common.grpc.client import aio_channel, wait_for_serving_async
from flywheel.common.registry import CHAMPION
from flywheel.inference.app import InferenceApp
from flywheel.inference.settings import InferenceSettings
from flywheel.training.scoring import open_version
from flywheel.v1 import common_pb2, prediction_pb2, prediction_pb2_grpc

MANUAL = "{debounce_seconds: 0}"  # every trigger off: runs start only when asked


def training(trainer: str, mode: str = "scratch", params: str = "{}") -> str:
    return (f"{{window: 1200, holdout_fraction: 0.25, min_examples: 300, trainer: {trainer}, "
            f"mode: {mode}, params: {params}}}")


class Rules:
    """A non-linear concept (an interaction and a threshold) that can turn abruptly."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def rows(self, n: int, drifted: bool = False) -> tuple[np.ndarray, np.ndarray]:
        X = self.rng.normal(size=(n, len(FEATURES)))
        if drifted:
            y = (X[:, 2] * X[:, 3] > 0) ^ (X[:, 4] > 0.8)
        else:
            y = (X[:, 0] * X[:, 1] > 0) ^ (X[:, 5] > 0.8)
        return X, y.astype(np.int64)


async def _trained(app, reason: str):
    run = app.controller.trigger("churn", reason)
    await wait_for(lambda: run.state in ("succeeded", "failed"), 180, f"run {reason!r}")
    assert run.state == "succeeded", run.error
    return run


async def _feed(app, bootstrap: str, prefix: str, X, y, version: int = 0) -> None:
    before = app.dataset.total("churn")
    produce(bootstrap, app.topics.labeled, labeled(prefix, X, y, y, version=version))
    await wait_for(lambda: app.dataset.total("churn") >= before + len(X), 60,
                   f"{len(X)} labeled examples")


@pytest.mark.parametrize("trainer", ["logistic", "mlp", "lightgbm", "xgboost"])
async def test_each_built_in_trainer_trains_exports_and_serves(make_app, kafka_bootstrap,
                                                               trainer):
    app = await make_app(MANUAL, spec_trainer=True, training=training(trainer))
    X, y = Rules(seed=1).rows(800)
    await _feed(app, kafka_bootstrap, "a", X, y)
    run = await _trained(app, "by hand")

    assert run.promoted and run.trainer == trainer and run.training_mode == "scratch"
    meta = app.registry.get("churn", run.candidate_version)
    assert meta.lineage.trainer == trainer and meta.lineage.training_mode == "scratch"
    assert 0 <= meta.metrics["parity_max_difference"] <= 1e-3
    assert meta.native_format and app.registry.read_folder("churn", meta.version, "native")
    assert {"accuracy", "log_loss", "f1"} <= set(meta.metrics)

    # Served: an inference service on the same registry and topics loads the announced
    # champion and answers Predict exactly as the ONNX scored offline.
    inference = InferenceApp(app.common, InferenceSettings(grpc_port=0, metrics_port=0))
    await inference.start()
    try:
        await wait_for_serving_async(f"127.0.0.1:{inference.port}", 60.0)
        probe = Rules(seed=9).rows(64)[0]
        async with aio_channel(f"127.0.0.1:{inference.port}") as channel:
            stub = prediction_pb2_grpc.PredictionServiceStub(channel)
            reply = await stub.Predict(prediction_pb2.PredictRequest(
                model="churn", rows=prediction_pb2.FeatureRows(rows=[
                    prediction_pb2.FeatureRow(values=r.tolist()) for r in probe])), timeout=10)
        assert reply.model_version == meta.version
        offline = open_version(app.registry, meta, list(FEATURES)).score(probe)
        served = [p.output for p in reply.predictions]
        assert [o.predicted_class for o in served] == offline.predicted.tolist()
        assert np.allclose([o.probabilities[1] for o in served], offline.probabilities[:, 1],
                           atol=1e-6)
    finally:
        await inference.stop()


async def test_fine_tune_continues_the_lightgbm_champion(make_app, kafka_bootstrap):
    params = "{n_estimators: 30, fine_tune_estimators: 10}"
    app = await make_app(MANUAL, spec_trainer=True,
                         training=training("lightgbm", "fine_tune", params))
    rules = Rules(seed=2)
    await _feed(app, kafka_bootstrap, "a", *rules.rows(800))
    first = await _trained(app, "first")
    # No champion yet: trained from scratch, and the run says why.
    assert first.training_mode == "scratch" and "no champion" in first.mode_note

    await _feed(app, kafka_bootstrap, "b", *rules.rows(800, drifted=True))
    second = await _trained(app, "after the drift")
    assert second.training_mode == "fine_tune" and second.continued_from == first.candidate_version
    v1, v2 = (app.registry.get("churn", r.candidate_version) for r in (first, second))
    assert v2.lineage.continued_from_version == v1.version
    assert v2.lineage.training_mode == "fine_tune"

    # The new version holds the champion's 30 trees, unchanged, plus 10 new ones.
    trees = {}
    for meta in (v1, v2):
        text = app.registry.read_folder("churn", meta.version, "native")["model.txt"].decode()
        trees[meta.version] = lgb.Booster(model_str=text).dump_model()["tree_info"]
    assert len(trees[v1.version]) == 30 and len(trees[v2.version]) == 40
    assert trees[v2.version][:30] == trees[v1.version]

    if second.promoted:
        await _feed(app, kafka_bootstrap, "c", *rules.rows(400, drifted=True))
        third = await _trained(app, "again")
        # A chain of fine-tunes walks back to the version trained from scratch.
        chain, version = [], third.candidate_version
        while version:
            meta = app.registry.get("churn", version)
            chain.append((version, meta.lineage.training_mode))
            version = meta.lineage.continued_from_version
        assert chain[-1] == (first.candidate_version, "scratch")
        assert all(mode == "fine_tune" for _, mode in chain[:-1]) and len(chain) == 3


async def test_best_of_trains_both_and_registers_the_better(make_app, kafka_bootstrap):
    app = await make_app(MANUAL, spec_trainer=True, training=training(
        "lightgbm", "best_of", "{n_estimators: 40, fine_tune_estimators: 20}"))
    rules = Rules(seed=3)
    await _feed(app, kafka_bootstrap, "a", *rules.rows(900))
    await _trained(app, "first")
    await _feed(app, kafka_bootstrap, "b", *rules.rows(900, drifted=True))
    run = await _trained(app, "after the drift")

    assert [c.mode for c in run.candidates] == ["scratch", "fine_tune"]
    scores = {c.mode: c.score for c in run.candidates}
    assert all(np.isfinite(s) for s in scores.values())
    chosen = next(c for c in run.candidates if c.version == run.candidate_version)
    other = next(c for c in run.candidates if c is not chosen)
    # The better passing one is chosen (a passing one over a refused one).
    assert (chosen.passed, chosen.score) >= (other.passed, other.score)
    meta = app.registry.get("churn", run.candidate_version)
    assert meta.metrics["scratch_accuracy"] == pytest.approx(scores["scratch"])
    assert meta.metrics["fine_tune_accuracy"] == pytest.approx(scores["fine_tune"])
    assert run.promoted == chosen.passed
    if chosen.mode == "fine_tune":
        assert meta.lineage.continued_from_version == run.parent_version


async def test_an_onnx_only_champion_is_fine_tuned_from_scratch(make_app, kafka_bootstrap):
    app = await make_app(MANUAL, spec_trainer=True, training=training("lightgbm", "fine_tune"))
    rules = Rules(seed=4)
    X, y = rules.rows(800)
    from flywheel.common.spec import Task
    from flywheel.training.trainers import TrainingData, make_trainer

    onnx_only = make_trainer("logistic").fit(
        TrainingData(X, y, Task.BINARY_CLASSIFICATION, FEATURES)).to_onnx()
    byo = app.registry.register("churn", onnx_only, task=common_pb2.MODEL_TASK_BINARY_CLASSIFICATION,
                                entity_type="customer", feature_names=FEATURES)
    app.registry.set_alias("churn", CHAMPION, byo.version)
    await _feed(app, kafka_bootstrap, "a", X, y, version=byo.version)
    run = await _trained(app, "by hand")
    assert run.training_mode == "scratch" and run.parent_version == byo.version
    assert "no native state" in run.mode_note
    meta = app.registry.get("churn", run.candidate_version)
    assert meta.lineage.mode_note == run.mode_note and meta.lineage.continued_from_version == 0


async def test_categorical_and_int_features_train_on_what_was_served(make_app, kafka_bootstrap):
    names = (*FEATURES[:4], "segment", "visits")
    app = await make_app(
        MANUAL, spec_trainer=True, training=training("logistic"), model_features=names,
        extra_features=("{name: segment, dtype: string, vocabulary: [retail, smb, enterprise]}",
                        "{name: visits, dtype: int64}"))
    rng = np.random.default_rng(5)
    n = 900
    segment = rng.integers(0, 4, n)  # codes as served: 1..3 the vocabulary, 0 an unknown value
    visits = rng.integers(0, 40, n)
    numeric = rng.normal(size=(n, 4))
    X = np.column_stack([numeric, segment, visits]).astype(np.float64)
    y = ((segment == 3) | ((segment == 0) & (visits > 20)) | (numeric[:, 0] > 1.5)).astype(int)
    await _feed_named(app, kafka_bootstrap, X, y, names)
    run = await _trained(app, "by hand")
    meta = app.registry.get("churn", run.candidate_version)
    # The version freezes the vocabulary it was trained with, for serving to encode alike.
    assert list(meta.vocabularies["segment"].values) == ["retail", "smb", "enterprise"]
    assert list(meta.feature_names) == list(names) and "visits" not in meta.vocabularies
    # Training saw exactly the logged numbers (codes and counts), in the model's order.
    window = app.dataset.window("churn", 5000, 0.25)
    seen = np.vstack([window.X_train, window.X_holdout])
    assert np.array_equal(np.sort(seen, axis=0), np.sort(X, axis=0))
    # The categorical column is one-hot inside the model: each code is its own category.
    assert meta.metrics["accuracy"] > 0.9


async def _feed_named(app, bootstrap, X, y, names) -> None:
    before = app.dataset.total("churn")
    produce(bootstrap, app.topics.labeled, labeled("n", X, y, y, version=0, names=names))
    await wait_for(lambda: app.dataset.total("churn") >= before + len(X), 60, "labels")
