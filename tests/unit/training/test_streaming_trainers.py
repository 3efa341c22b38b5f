"""The lightgbm and xgboost trainers on a window's rows on disk (SpilledRows): the same trees as
on the rows in memory, an ONNX export that answers as the native model, fine-tuning that keeps
the champion's trees in front, and reads of one batch at a time. Pure logic: no broker."""

from __future__ import annotations

import numpy as np
import pytest

from flywheel.common.spec import Task
from flywheel.training.parity import compare
from flywheel.training.scoring import OnnxScorer
from flywheel.training.spill import BATCH_ROWS, RowSpiller, SpilledRows
from flywheel.training.trainers import TrainerError, TrainingData, make_trainer
from flywheel.training.trainers.base import streamed

TASKS = [Task.BINARY_CLASSIFICATION, Task.MULTICLASS_CLASSIFICATION, Task.REGRESSION]
CASES = [(name, task) for name in ("lightgbm", "xgboost") for task in TASKS]
# Bagging and column sampling on: the streamed fit must draw the same rows and columns.
PARAMS = {"n_estimators": 20, "fine_tune_estimators": 8, "subsample": 0.8,
          "colsample_bytree": 0.8}


def _rows(task: Task, n: int, seed: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))  # float64 off the float32 grid: both fits must round alike
    X[:, 4] = rng.integers(0, 4, n)  # a categorical column: codes 0..3
    signal = X[:, 0] + 0.5 * X[:, 1] * X[:, 2] + (X[:, 4] == 2) + shift * X[:, 3]
    if task is Task.BINARY_CLASSIFICATION:
        return X, (signal > 0.3).astype(np.int64)
    if task is Task.MULTICLASS_CLASSIFICATION:
        return X, np.digitize(signal, [-0.4, 0.9]).astype(np.int64)
    return X, signal


def _data(X, y, task: Task) -> TrainingData:
    classes = 3 if task is Task.MULTICLASS_CLASSIFICATION else 2
    return TrainingData(X, y, task, ("a", "b", "c", "d", "segment"), categorical={4: 4},
                        num_classes=classes)


def _spill(folder, X: np.ndarray, kind: type[SpilledRows] = SpilledRows) -> SpilledRows:
    spiller = RowSpiller(folder, X.shape[1])
    for start in range(0, len(X), 50_000):
        spiller.write(X[start:start + 50_000])
    rows = spiller.finish()
    # A reader of its own opens the file before `rows` goes (and unlinks it): an open file
    # outlives its name.
    return rows if kind is SpilledRows else kind(rows.path, *rows.shape)


def _fit_streamed(name: str, trainer, data: TrainingData, parent, batch_rows: int):
    """The streamed fit with small batches (the trainer's own are larger than these windows)."""
    if name == "lightgbm":
        from flywheel.training.trainers.lightgbm_stream import fit_streamed

        return fit_streamed(trainer.params, data, parent, batch_rows)
    from flywheel.training.trainers.boosted import xgboost_parent
    from flywheel.training.trainers.xgboost_stream import fit_streamed

    return fit_streamed(trainer.params, data, xgboost_parent(parent), batch_rows)


def _scores(model, X: np.ndarray) -> np.ndarray:
    scores = model.predict(X)
    return scores.probabilities if scores.probabilities is not None else scores.predicted


def _assert_exports_faithfully(model, data: TrainingData) -> None:
    classifier = data.task.is_classification
    exported = OnnxScorer(model.to_onnx(), classifier=classifier).score(data.X)
    parity = compare(model.predict(data.X), exported, data.y, classifier)
    assert parity.passed(1e-3), parity.describe(1e-3)


def _native(model) -> bytes:
    return next(iter(model.native_state().files.values()))


@pytest.mark.parametrize("name, task", CASES)
def test_streamed_fit_is_the_in_memory_fit(tmp_path, name, task):
    X, y = _rows(task, 3000, seed=0)
    rows = _spill(tmp_path, X)
    trainer = make_trainer(name, PARAMS)
    in_memory = trainer.fit(_data(X, y, task))
    through_trainer = trainer.fit(_data(rows, y, task))
    in_batches = _fit_streamed(name, trainer, _data(rows, y, task), None, batch_rows=700)
    # Same rows, same settings, same bins: the same trees, whatever the batches.
    assert _native(through_trainer) == _native(in_memory)
    assert _native(in_batches) == _native(in_memory)
    held_out, _ = _rows(task, 1000, seed=5)
    assert np.max(np.abs(_scores(in_batches, held_out) - _scores(in_memory, held_out))) < 1e-12
    _assert_exports_faithfully(in_batches, _data(X, y, task))


@pytest.mark.parametrize("name, task", CASES)
def test_streamed_fine_tune_continues_the_champion(tmp_path, name, task):
    X, y = _rows(task, 2000, seed=1)
    trainer = make_trainer(name, PARAMS)
    champion = trainer.fit(_data(X, y, task))
    X2, y2 = _rows(task, 2500, seed=2, shift=2.0)
    spilled = _data(_spill(tmp_path, X2), y2, task)
    child = _fit_streamed(name, trainer, spilled, champion.native_state(), batch_rows=600)
    # As the in-memory continuation (init_model / xgb_model) writes it.
    assert _native(child) == _native(trainer.fit(_data(X2, y2, task),
                                                 parent=champion.native_state()))
    held_out, _ = _rows(task, 1000, seed=6, shift=1.0)
    rounds = PARAMS["n_estimators"]
    if name == "lightgbm":
        before, after = champion.estimator.booster_, child.booster
        assert after.current_iteration() == rounds + PARAMS["fine_tune_estimators"]
        # The champion's trees come first: its raw score plus the new trees' is the child's.
        new = after.predict(held_out, raw_score=True, start_iteration=rounds)
        assert np.allclose(after.predict(held_out, raw_score=True),
                           before.predict(held_out, raw_score=True) + new, rtol=0, atol=1e-9)
        assert (after.dump_model()["tree_info"][:len(before.dump_model()["tree_info"])]
                == before.dump_model()["tree_info"])
    else:
        import xgboost as xgb

        matrix = xgb.DMatrix(np.asarray(held_out, np.float32))
        before, after = champion.estimator.get_booster(), child.estimator.get_booster()
        assert after.num_boosted_rounds() == rounds + PARAMS["fine_tune_estimators"]
        assert np.allclose(after.predict(matrix, output_margin=True, iteration_range=(0, rounds)),
                           before.predict(matrix, output_margin=True), rtol=0, atol=1e-9)
    _assert_exports_faithfully(child, _data(X2, y2, task))


def test_models_of_different_kinds_are_not_merged():
    from flywheel.training.trainers.lightgbm_stream import merge_models

    binary = make_trainer("lightgbm", {"n_estimators": 2}).fit(
        _data(*_rows(Task.BINARY_CLASSIFICATION, 300, seed=3), Task.BINARY_CLASSIFICATION))
    regression = make_trainer("lightgbm", {"n_estimators": 2}).fit(
        _data(*_rows(Task.REGRESSION, 300, seed=3), Task.REGRESSION))
    with pytest.raises(TrainerError, match="objective="):
        merge_models(_native(binary).decode(), _native(regression).decode())


def test_which_trainers_stream():
    assert getattr(make_trainer("lightgbm"), "streams", False) is True
    assert getattr(make_trainer("xgboost"), "streams", False) is True
    assert getattr(make_trainer("logistic"), "streams", False) is False
    assert streamed(np.zeros((2, 2))) is False


class CountingRows(SpilledRows):
    """Spilled rows that remember their largest single read and refuse to be read whole."""

    largest = 0
    read_rows = 0

    def read(self, start: int, stop: int) -> np.ndarray:
        rows = super().read(start, stop)
        self.largest = max(self.largest, len(rows))
        self.read_rows += len(rows)
        return rows

    def __array__(self, dtype=None, copy=None):
        raise AssertionError("the spilled rows were materialized")


@pytest.mark.parametrize("name", ["lightgbm", "xgboost"])
def test_a_large_window_is_read_a_batch_at_a_time(tmp_path, name):
    n, features = 400_000, 16
    rng = np.random.default_rng(4)
    X = rng.normal(size=(n, features))
    y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(np.int64)
    rows = _spill(tmp_path, X, CountingRows)
    names = tuple(f"f{i}" for i in range(features))
    trainer = make_trainer(name, {"n_estimators": 2, "fine_tune_estimators": 1})
    champion = trainer.fit(TrainingData(X[:2000], y[:2000], Task.BINARY_CLASSIFICATION, names))
    assert streamed(rows)
    model = trainer.fit(TrainingData(rows, y, Task.BINARY_CLASSIFICATION, names),
                        parent=champion.native_state())
    assert 0 < rows.largest <= BATCH_ROWS
    # A few passes (LightGBM: the champion's scores, the binning sample, the binned copy, 3;
    # XGBoost's QuantileDMatrix, 4), not a read per round.
    assert rows.read_rows <= 6 * n
    # Past 200k rows LightGBM bins from a sample: the streamed fit draws the same one.
    in_memory = trainer.fit(TrainingData(X, y, Task.BINARY_CLASSIFICATION, names),
                            parent=champion.native_state())
    assert _native(model) == _native(in_memory)
