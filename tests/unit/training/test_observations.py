"""What the triggers observe of a champion, from the dataset and the registry (local files
only): a version brought without metrics is measured against its own first window of joined
labels, and its drift reference is the data it was promoted on; regression watches error."""

from __future__ import annotations

import numpy as np
import pytest

from flywheel.common.registry import CHAMPION, ModelRegistry
from flywheel.common.spec import FlywheelSpec
from flywheel.training.controller import Controller
from flywheel.training.dataset import Dataset, LabeledRow
from flywheel.training.triggers import fire
from flywheel.v1 import common_pb2, events_pb2

NAMES = ["a", "b"]


def _spec(task: str, triggers: dict) -> FlywheelSpec:
    return FlywheelSpec.model_validate({
        "entities": [{"name": "customer", "features": [{"name": n} for n in NAMES]}],
        "models": [{"name": "m", "entity_type": "customer", "task": task, "features": NAMES,
                    "triggers": {"window": 100, "debounce_seconds": 0, **triggers}}],
    })


def _rows(start: int, X, y, predicted, version: int, regression: bool = False):
    rows = []
    for i, (x, label, said) in enumerate(zip(X, y, predicted)):
        if regression:
            label_msg = common_pb2.Label(value=float(label))
            output = common_pb2.ModelOutput(predicted_value=float(said))
        else:
            label_msg = common_pb2.Label(class_label=int(label))
            output = common_pb2.ModelOutput(predicted_class=int(said))
        example = events_pb2.LabeledExample(
            prediction_id=f"p{start + i}", model_name="m", model_version=version,
            role=common_pb2.MODEL_ROLE_CHAMPION, feature_names=NAMES, features=list(x),
            label=label_msg, prediction=output)
        rows.append(LabeledRow("labeled", 0, start + i, 1_000 + start + i, example))
    return rows


def _controller(tmp_path, spec):
    registry = ModelRegistry(tmp_path / "registry")
    version = registry.register("m", b"onnx", task=1, entity_type="customer",
                                feature_names=NAMES).version  # brought: no metrics, no lineage
    registry.set_alias("m", CHAMPION, version)
    dataset = Dataset(tmp_path / "data", spec.models)
    controller = Controller(spec=spec, dataset=dataset, registry=registry, runner=None,
                            live_gate=None)
    return controller, dataset, version


def test_a_byo_champion_is_measured_against_its_own_first_window(tmp_path):
    spec = _spec("binary_classification", {"accuracy_drop": 0.2, "psi_above": 0.5})
    controller, dataset, version = _controller(tmp_path, spec)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    first_X = rng.normal(size=(100, 2))
    dataset.append(_rows(0, first_X, y[:100], y[:100], version))  # right on its first window
    obs = controller.observations(spec.models[0])
    assert obs.champion_training_accuracy == 1.0 and obs.champion_accuracy == 1.0
    assert fire(spec.models[0].triggers, obs) is None

    # Later it is right half the time, on shifted features: both triggers see it.
    wrong = np.where(rng.random(200) < 0.5, 1 - y[100:], y[100:])
    dataset.append(_rows(100, rng.normal(loc=3.0, size=(200, 2)), y[100:], wrong, version))
    obs = controller.observations(spec.models[0])
    assert obs.champion_training_accuracy == 1.0 and obs.champion_accuracy < 0.7
    assert fire(spec.models[0].triggers, obs).startswith("accuracy_drop")
    assert obs.max_psi > 0.5
    assert np.array_equal(controller._reference(spec.models[0],
                                                controller._registry.get("m", version)),
                          first_X)


def test_a_regression_champion_is_watched_by_its_error(tmp_path):
    spec = _spec("regression", {"error_above": 0.5, "error_increase": 0.3})
    controller, dataset, version = _controller(tmp_path, spec)
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(200, 2)), rng.normal(size=200)
    dataset.append(_rows(0, X[:100], y[:100], y[:100] + 0.1, version, regression=True))
    obs = controller.observations(spec.models[0])
    assert obs.champion_error == pytest.approx(0.1) and obs.error_name == "mae"
    assert obs.champion_accuracy is None and fire(spec.models[0].triggers, obs) is None
    dataset.append(_rows(100, X[100:], y[100:], y[100:] + 1.0, version, regression=True))
    obs = controller.observations(spec.models[0])
    assert obs.champion_error == pytest.approx(1.0)
    assert fire(spec.models[0].triggers, obs).startswith("error_above")
    no_ceiling = _spec("regression", {"error_increase": 0.3}).models[0].triggers
    assert fire(no_ceiling, obs).startswith("error_increase")
