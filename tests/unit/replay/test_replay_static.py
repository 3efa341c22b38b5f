"""The static baseline: the champion's ONNX from the registry, scored offline, agrees with the
model it was exported from; missing values give no prediction; a tampered artifact is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flywheel.common.registry import ModelRegistry
from flywheel.demo.seed import train_seed_model
from flywheel.replay.static import StaticModel, StaticModelError
from flywheel.v1 import common_pb2

NAMES = ["a", "b", "c"]


def champion(tmp_path: Path, features: np.ndarray, labels: np.ndarray, regression: bool) -> Path:
    artifact, _ = train_seed_model(features, labels, seed=0, regression=regression)
    registry = ModelRegistry(tmp_path / "registry")
    task = common_pb2.MODEL_TASK_REGRESSION if regression else common_pb2.MODEL_TASK_BINARY_CLASSIFICATION
    meta = registry.register("m", artifact, task=task, entity_type="e", feature_names=NAMES)
    registry.promote("m", meta.version)
    return tmp_path / "registry"


def columns(features: np.ndarray) -> dict[str, list]:
    return {name: features[:, i].tolist() for i, name in enumerate(NAMES)}


def test_classifier_predictions_match_the_rule_it_learned(tmp_path: Path):
    rng = np.random.default_rng(0)
    features = rng.standard_normal((600, 3))
    labels = (features[:, 0] - features[:, 2] > 0).astype(int)
    static = StaticModel.champion(str(champion(tmp_path, features, labels, False)), "m")
    assert static.version == 1 and static.feature_names == NAMES
    data = columns(features)
    data["b"][5] = None  # a missing value: no prediction for that row
    predicted = static.score(data, 600)
    assert np.isnan(predicted[5])
    scored = ~np.isnan(predicted)
    assert set(np.unique(predicted[scored])) <= {0.0, 1.0}
    assert np.mean(predicted[scored] == labels[scored]) > 0.95


def test_regression_values(tmp_path: Path):
    rng = np.random.default_rng(1)
    features = rng.standard_normal((400, 3))
    values = 2.0 * features[:, 1] + 0.5
    static = StaticModel.champion(str(champion(tmp_path, features, values, True)), "m")
    predicted = static.score(columns(features), 400)
    assert np.max(np.abs(predicted - values)) < 0.05


def test_a_tampered_artifact_is_refused(tmp_path: Path):
    features = np.random.default_rng(2).standard_normal((100, 3))
    root = champion(tmp_path, features, (features[:, 0] > 0).astype(int), False)
    artifact = root / "m" / "1" / "model.onnx"
    artifact.write_bytes(artifact.read_bytes() + b"\0")
    with pytest.raises(StaticModelError, match="sha256"):
        StaticModel.champion(str(root), "m")


def test_a_column_the_model_reads_must_be_there(tmp_path: Path):
    features = np.random.default_rng(3).standard_normal((100, 3))
    static = StaticModel.champion(
        str(champion(tmp_path, features, (features[:, 0] > 0).astype(int), False)), "m")
    with pytest.raises(StaticModelError, match="'c'"):
        static.score({"a": [1.0], "b": [1.0]}, 1)
