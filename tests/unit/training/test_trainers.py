"""Each built-in trainer: fits, exports ONNX that answers as the native model, keeps a native
state that loads, and continues it (fine-tuning). Pure logic: no broker, no Redis."""

from __future__ import annotations

import numpy as np
import pytest

from flywheel.common.spec import Task
from flywheel.training.parity import compare
from flywheel.training.scoring import OnnxScorer
from flywheel.training.trainers import TrainerError, TrainingData, make_trainer

CLASSIFIERS = ["logistic", "mlp", "lightgbm", "xgboost"]
REGRESSORS = ["ridge", "mlp", "lightgbm", "xgboost"]


def _data(task: Task, n: int = 600, seed: int = 0, shift: float = 0.0) -> TrainingData:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    X[:, 4] = rng.integers(0, 4, n)  # a categorical column: codes 0..3 (0: unknown)
    signal = X[:, 0] + 0.5 * X[:, 1] * X[:, 2] + (X[:, 4] == 2) + shift * X[:, 3]
    y = (signal > 0.3).astype(np.int64) if task.is_classification else signal
    return TrainingData(X, y, task, ("a", "b", "c", "d", "segment"), categorical={4: 4})


@pytest.mark.parametrize("task, name", [(Task.BINARY_CLASSIFICATION, n) for n in CLASSIFIERS]
                         + [(Task.REGRESSION, n) for n in REGRESSORS])
def test_fit_export_parity_and_native_state(task, name):
    data = _data(task)
    trainer = make_trainer(name, {})
    model = trainer.fit(data)
    scorer = OnnxScorer(model.to_onnx(), classifier=task.is_classification)
    native, exported = model.predict(data.X), scorer.score(data.X)
    parity = compare(native, exported, data.y, task.is_classification)
    assert parity.passed(1e-3), parity.describe(1e-3)
    if task.is_classification:
        assert np.mean(exported.predicted == data.y) > 0.75
        assert exported.probabilities.shape == (len(data.y), 2)
    else:
        assert np.mean(np.abs(exported.predicted - data.y)) < np.std(data.y)
    state = model.native_state()
    assert state.format == trainer.native_format and state.files
    assert all(isinstance(v, bytes) for v in state.files.values())

    # Fine-tuning continues the stored state on new data and exports as faithfully.
    shifted = _data(task, seed=1, shift=2.0)
    continued = trainer.fit(shifted, parent=state)
    assert continued.native_state().format == state.format
    after = OnnxScorer(continued.to_onnx(), classifier=task.is_classification).score(shifted.X)
    assert compare(continued.predict(shifted.X), after, shifted.y,
                   task.is_classification).passed(1e-3)


@pytest.mark.parametrize("name", ["logistic", "mlp"])
def test_a_short_warm_start_stays_near_the_parent(name):
    """One iteration from the parent's weights: far closer to the parent than a fit from
    scratch on the new data is."""
    data, shifted = _data(Task.BINARY_CLASSIFICATION), _data(Task.BINARY_CLASSIFICATION,
                                                             seed=1, shift=3.0)
    trainer = make_trainer(name, {"fine_tune_max_iter": 1})
    parent = trainer.fit(data)
    continued = trainer.fit(shifted, parent=parent.native_state())
    scratch = trainer.fit(shifted)
    before = parent.predict(shifted.X).probabilities[:, 1]
    near = np.mean(np.abs(continued.predict(shifted.X).probabilities[:, 1] - before))
    far = np.mean(np.abs(scratch.predict(shifted.X).probabilities[:, 1] - before))
    assert near < far / 2


def test_lightgbm_fine_tune_keeps_the_champions_trees():
    import lightgbm as lgb

    data = _data(Task.BINARY_CLASSIFICATION)
    trainer = make_trainer("lightgbm", {"n_estimators": 30, "fine_tune_estimators": 10})
    parent = trainer.fit(data).native_state()
    child = trainer.fit(_data(Task.BINARY_CLASSIFICATION, seed=2, shift=2.0), parent=parent)
    parent_dump = lgb.Booster(model_str=parent.files["model.txt"].decode()).dump_model()
    child_dump = lgb.Booster(model_str=child.native_state().files["model.txt"].decode()).dump_model()
    assert len(parent_dump["tree_info"]) == 30 and len(child_dump["tree_info"]) == 40
    assert child_dump["tree_info"][:30] == parent_dump["tree_info"]


def test_xgboost_fine_tune_adds_rounds():
    import xgboost as xgb

    data = _data(Task.BINARY_CLASSIFICATION)
    trainer = make_trainer("xgboost", {"n_estimators": 20, "fine_tune_estimators": 5})
    parent = trainer.fit(data).native_state()
    child = trainer.fit(data, parent=parent).native_state()
    booster = xgb.Booster()
    booster.load_model(bytearray(child.files["model.json"]))
    assert booster.num_boosted_rounds() == 25


def test_ridge_fine_tune_alpha_is_the_pull_toward_the_parent():
    data, shifted = _data(Task.REGRESSION), _data(Task.REGRESSION, seed=3, shift=3.0)
    parent = make_trainer("ridge").fit(data)
    stiff = make_trainer("ridge", {"alpha": 1e9}).fit(shifted, parent=parent.native_state())
    loose = make_trainer("ridge", {"alpha": 1e-3}).fit(shifted, parent=parent.native_state())
    # The intercept is not penalized: a stiff continuation moves the parent by a constant.
    moved = stiff.predict(data.X).predicted - parent.predict(data.X).predicted
    assert np.std(moved) < 1e-3
    scratch = make_trainer("ridge", {"alpha": 1e-3}).fit(shifted)
    assert np.allclose(loose.predict(data.X).predicted, scratch.predict(data.X).predicted,
                       atol=1e-3)


def test_parameters_are_checked_with_the_key_named():
    with pytest.raises(TrainerError, match=r"training.params.num_leafs"):
        make_trainer("lightgbm", {"num_leafs": 3})
    with pytest.raises(TrainerError, match=r"training.params.learning_rate"):
        make_trainer("xgboost", {"learning_rate": -1})
    with pytest.raises(TrainerError, match="unknown trainer 'forest'"):
        make_trainer("forest")
    with pytest.raises(TrainerError, match="cannot load"):
        make_trainer("no_such_module_here:factory")


def test_a_users_trainer_by_module_and_factory(tmp_path, monkeypatch):
    (tmp_path / "my_trainers.py").write_text(
        "from flywheel.training.trainers import make_trainer\n"
        "class Wrapped:\n"
        "    name = 'my_trainers:build'\n"
        "    native_format = 'sklearn-skops'\n"
        "    def __init__(self, C=1.0):\n"
        "        self.inner = make_trainer('logistic', {'C': C})\n"
        "    def fit(self, data, parent=None):\n"
        "        return self.inner.fit(data, parent)\n"
        "def build(**params):\n"
        "    return Wrapped(**params)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    trainer = make_trainer("my_trainers:build", {"C": 0.5})
    assert trainer.inner.params.C == 0.5
    model = trainer.fit(_data(Task.BINARY_CLASSIFICATION))
    assert OnnxScorer(model.to_onnx()).score(np.zeros((2, 5))).predicted.shape == (2,)
    with pytest.raises(TrainerError, match="unexpected keyword"):
        make_trainer("my_trainers:build", {"gamma": 1})


def test_a_foreign_type_in_a_stored_pipeline_is_refused():
    from collections import Counter

    import skops.io

    from flywheel.training.trainers.base import NativeState
    from flywheel.training.trainers.sklearn_models import load_pipeline

    data = skops.io.dumps({"x": Counter(a=1)})
    with pytest.raises(TrainerError, match="outside scikit-learn"):
        load_pipeline(NativeState("sklearn-skops", {"pipeline.skops": data}))


def test_lightgbm_thresholds_are_snapped_down_to_float32():
    from flywheel.training.trainers.boosted import snap_thresholds

    x = np.float32(-0.39578688)  # a float32 feature value
    below = float(x) - 1.4901161e-08  # a float64 threshold just under it: x goes right
    assert np.float32(below) == x  # ...but rounded to float32 it would send x left
    text = f"tree_sizes=10 20\nTree=0\nthreshold={below!r} 0.5 1.0000000180025095e-35\nend"
    snapped = snap_thresholds(text)
    assert "tree_sizes" not in snapped
    values = [float(v) for v in snapped.split("threshold=")[1].split("\n")[0].split()]
    assert all(float(np.float32(v)) == v for v in values)  # exact in float32
    assert (float(x) <= values[0]) == (float(x) <= below) is False
    assert values[1] == 0.5


def test_a_snapped_booster_decides_as_before_on_float32_inputs():
    import lightgbm as lgb

    data = _data(Task.BINARY_CLASSIFICATION, n=2000, seed=7)
    model = make_trainer("lightgbm", {"n_estimators": 40}).fit(data)
    X = np.random.default_rng(8).normal(size=(3000, 5)).astype(np.float32).astype(np.float64)
    X[:, 4] = np.random.default_rng(9).integers(0, 4, 3000)
    snapped = model.estimator.booster_
    raw = lgb.LGBMClassifier(n_estimators=40, verbose=-1, n_jobs=1).fit(
        np.asarray(data.X, np.float32).astype(np.float64), data.y)
    assert snapped.num_trees() == 40 and raw.booster_.num_trees() == 40
    # The same training, unsnapped, predicts the same on float32 values.
    assert np.allclose(snapped.predict(X), raw.booster_.predict(X), atol=1e-12)
