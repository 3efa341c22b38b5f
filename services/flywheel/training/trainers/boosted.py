"""Gradient-boosted trees: lightgbm and xgboost (the `boost` extra).

Both export through onnxmltools at target_opset 15 (its converters refuse 17) and keep their
native state in the libraries' own text formats (LightGBM model text, XGBoost JSON), which
load without executing code. Fine-tuning adds trees on top of the champion's booster
(`init_model` / `xgb_model`), fitted on the recent window: the champion's trees are kept as
they are, the new ones learn what changed.

The trees learn on features rounded to float32, the precision inference feeds them. LightGBM
keeps its split thresholds in float64, and ONNX's tree ensemble in float32: a threshold
rounded up to the float32 value of a feature would send that value the other way online
(seen: one holdout row of 625 off by 0.016 in probability). So each fitted booster's
thresholds are snapped down to float32 (`snap_thresholds`): for float32 inputs every split
decides as before, and the export holds the thresholds exactly.

Given the window's rows on disk rather than as an array (`streams = True`, see base.py), both
trainers read them a batch at a time (lightgbm_stream, xgboost_stream) and fit the same trees.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from flywheel.common.spec import Task
from flywheel.training.scoring import Scores
from flywheel.training.trainers.base import (
    INPUT_NAME,
    NativeState,
    TrainerError,
    TrainingData,
    streamed,
    to_float32_grid,
)
from flywheel.training.trainers.params import LightGBMParams, XGBoostParams

ONNX_OPSET = 15
LIGHTGBM_FORMAT = "lightgbm-text"
XGBOOST_FORMAT = "xgboost-json"


def _import(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise TrainerError(f"trainer needs the `{module}` package: install the boost extra "
                           "(pip install 'flywheel-mesh[boost]')") from None


def _batch_dimension_free(model: Any) -> bytes:
    """The converters declare some outputs with a fixed batch of 1; inference checks shapes,
    so every output's first dimension is made symbolic."""
    for output in model.graph.output:
        dims = output.type.tensor_type.shape.dim
        if len(dims):
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "N"
    return model.SerializeToString()


def snap_thresholds(model_text: str) -> str:
    """LightGBM model text with every numerical split threshold t replaced by the largest
    float32 not above t: for a float32 x, `x <= t` and `x <= snapped` agree, and the snapped
    value converts to float32 exactly."""
    out = []
    for line in model_text.split("\n"):
        if line.startswith("tree_sizes="):
            continue  # byte sizes of the tree blocks, no longer true; LightGBM reads without
        if line.startswith("threshold="):
            values = np.array(line[len("threshold="):].split(), dtype=np.float64)
            down = values.astype(np.float32)
            above = down.astype(np.float64) > values
            down[above] = np.nextafter(down[above], np.float32(-np.inf))
            line = "threshold=" + " ".join(repr(float(v)) for v in down)
        out.append(line)
    return "\n".join(out)


class BoostedModel:
    def __init__(self, estimator: Any, data: TrainingData, convert: str, state: NativeState):
        self.estimator = estimator
        self._classifier = data.task.is_classification
        self._n_features = data.n_features
        self._convert = convert
        self._state = state

    def predict(self, X: np.ndarray) -> Scores:
        X = to_float32_grid(X)
        if self._classifier:
            probabilities = np.asarray(self.estimator.predict_proba(X), dtype=np.float64)
            return Scores(probabilities.argmax(axis=1), probabilities)
        return Scores(np.asarray(self.estimator.predict(X), dtype=np.float64), None)

    def to_onnx(self) -> bytes:
        onnxmltools = _import("onnxmltools")
        from onnxmltools.convert.common.data_types import FloatTensorType

        types = [(INPUT_NAME, FloatTensorType([None, self._n_features]))]
        if self._convert == "lightgbm":
            model = onnxmltools.convert_lightgbm(self.estimator, initial_types=types,
                                                 target_opset=ONNX_OPSET, zipmap=False)
        else:
            model = onnxmltools.convert_xgboost(self.estimator, initial_types=types,
                                                target_opset=ONNX_OPSET)
        return _batch_dimension_free(model)

    def native_state(self) -> NativeState:
        return self._state


def lightgbm_parent(parent: NativeState | None) -> str | None:
    """The champion's LightGBM model text, when fine-tuning."""
    if parent is None:
        return None
    text = parent.files.get("model.txt")
    if parent.format != LIGHTGBM_FORMAT or text is None:
        raise TrainerError(f"native state {parent.format!r} is not a LightGBM model")
    return text.decode()


def xgboost_parent(parent: NativeState | None) -> Any:
    """The champion's XGBoost booster, when fine-tuning."""
    if parent is None:
        return None
    raw = parent.files.get("model.json")
    if parent.format != XGBOOST_FORMAT or raw is None:
        raise TrainerError(f"native state {parent.format!r} is not an XGBoost model")
    booster = _import("xgboost").Booster()
    booster.load_model(bytearray(raw))
    return booster


class LightGBMTrainer:
    name = "lightgbm"
    native_format = LIGHTGBM_FORMAT
    # Takes the window's rows on disk too (see base.py), through lightgbm_stream.
    streams = True

    def __init__(self, params: LightGBMParams) -> None:
        self.params = params

    def fit(self, data: TrainingData, parent: NativeState | None = None) -> Any:
        lgb = _import("lightgbm")
        if streamed(data.X):
            from flywheel.training.trainers.lightgbm_stream import fit_streamed

            return fit_streamed(self.params, data, parent)
        p = self.params
        kind = lgb.LGBMClassifier if data.task.is_classification else lgb.LGBMRegressor
        # data_random_seed picks the rows LightGBM bins from when a window has more than
        # 200k: named, rather than derived from the seed in C++, so that the streamed fit
        # (whose sample is drawn in Python, which sees only the named one) picks the same.
        settings = dict(learning_rate=p.learning_rate, num_leaves=p.num_leaves,
                        max_depth=p.max_depth, min_child_samples=p.min_child_samples,
                        subsample=p.subsample, subsample_freq=1 if p.subsample < 1 else 0,
                        colsample_bytree=p.colsample_bytree, reg_lambda=p.reg_lambda,
                        random_state=p.random_state, data_random_seed=p.random_state,
                        n_jobs=1, verbose=-1)
        champion = lightgbm_parent(parent)
        init_model = lgb.Booster(model_str=champion) if champion is not None else None
        estimator = kind(n_estimators=p.fine_tune_estimators if parent else p.n_estimators,
                         **settings)
        y = data.y.astype(np.int64) if data.task.is_classification else data.y
        estimator.fit(to_float32_grid(data.X), y, init_model=init_model)
        text = snap_thresholds(estimator.booster_.model_to_string())
        estimator._Booster = lgb.Booster(model_str=text)  # predicts and exports the snapped trees
        state = NativeState(LIGHTGBM_FORMAT, {"model.txt": text.encode()})
        return BoostedModel(estimator, data, "lightgbm", state)


class XGBoostTrainer:
    name = "xgboost"
    native_format = XGBOOST_FORMAT
    # Takes the window's rows on disk too (see base.py), through xgboost_stream.
    streams = True

    def __init__(self, params: XGBoostParams) -> None:
        self.params = params

    def fit(self, data: TrainingData, parent: NativeState | None = None) -> BoostedModel:
        xgb = _import("xgboost")
        booster = xgboost_parent(parent)
        if streamed(data.X):
            from flywheel.training.trainers.xgboost_stream import fit_streamed

            return fit_streamed(self.params, data, booster)
        p = self.params
        kind = xgb.XGBClassifier if data.task.is_classification else xgb.XGBRegressor
        estimator = kind(n_estimators=p.fine_tune_estimators if parent else p.n_estimators,
                         learning_rate=p.learning_rate, max_depth=p.max_depth,
                         min_child_weight=p.min_child_weight, subsample=p.subsample,
                         colsample_bytree=p.colsample_bytree, reg_lambda=p.reg_lambda,
                         random_state=p.random_state, tree_method="hist", n_jobs=1)
        y = data.y.astype(np.int64) if data.task.is_classification else data.y
        estimator.fit(to_float32_grid(data.X), y, xgb_model=booster)
        # The converter reads the class count as trees / n_estimators: after continuing a
        # booster, n_estimators must count the champion's rounds too.
        estimator.set_params(n_estimators=estimator.get_booster().num_boosted_rounds())
        raw = bytes(estimator.get_booster().save_raw("json"))
        return BoostedModel(estimator, data, "xgboost",
                            NativeState(XGBOOST_FORMAT, {"model.json": raw}))


# -- the wrappers' settings as the libraries' own parameters: the streamed fits (lightgbm_stream,
# xgboost_stream) and the same trees trained as one booster across Ray Train workers --------

def lightgbm_params(task: Task, num_classes: int, p: dict[str, Any]) -> dict[str, Any]:
    objective = {Task.BINARY_CLASSIFICATION: "binary",
                 Task.MULTICLASS_CLASSIFICATION: "multiclass"}.get(task, "regression")
    params = {"objective": objective, "learning_rate": p["learning_rate"],
              "num_leaves": p["num_leaves"], "max_depth": p["max_depth"],
              "min_data_in_leaf": p["min_child_samples"], "bagging_fraction": p["subsample"],
              "bagging_freq": 1 if p["subsample"] < 1 else 0,
              "feature_fraction": p["colsample_bytree"], "lambda_l2": p["reg_lambda"],
              "seed": p["random_state"], "data_random_seed": p["random_state"],
              "num_threads": 1, "verbose": -1}
    if task is Task.MULTICLASS_CLASSIFICATION:
        params["num_class"] = num_classes
    return params


def xgboost_params(task: Task, num_classes: int, p: dict[str, Any]) -> dict[str, Any]:
    objective = {Task.BINARY_CLASSIFICATION: "binary:logistic",
                 Task.MULTICLASS_CLASSIFICATION: "multi:softprob"}.get(task, "reg:squarederror")
    params = {"objective": objective, "eta": p["learning_rate"], "max_depth": p["max_depth"],
              "min_child_weight": p["min_child_weight"], "subsample": p["subsample"],
              "colsample_bytree": p["colsample_bytree"], "lambda": p["reg_lambda"],
              "seed": p["random_state"], "tree_method": "hist", "nthread": 1}
    if task is Task.MULTICLASS_CLASSIFICATION:
        params["num_class"] = num_classes
    return params


def train_booster(kind: str, task: Task, num_classes: int, params: dict[str, Any],
                  X: np.ndarray, y: np.ndarray, parent: bytes | None,
                  network: dict[str, Any]) -> bytes:
    """One worker's part of a collective fit (`network`: LightGBM's machines; XGBoost's
    collective is set up by its Ray trainer around the call); returns the native model."""
    rounds = params["fine_tune_estimators"] if parent else params["n_estimators"]
    if kind == "lightgbm":
        lgb = _import("lightgbm")
        settings = lightgbm_params(task, num_classes, params)
        if network:
            settings.update(network, tree_learner="data_parallel", pre_partition=True)
        init = lgb.Booster(model_str=parent.decode()) if parent else None
        booster = lgb.train(settings, lgb.Dataset(X, y), num_boost_round=rounds,
                            init_model=init, keep_training_booster=True)
        return booster.model_to_string().encode()
    xgb = _import("xgboost")
    init = None
    if parent:
        init = xgb.Booster()
        init.load_model(bytearray(parent))
    booster = xgb.train(xgboost_params(task, num_classes, params), xgb.DMatrix(X, label=y),
                        num_boost_round=rounds, xgb_model=init)
    return bytes(booster.save_raw("json"))


class LightGBMBoosterModel:
    """A LightGBM booster trained outside the scikit-learn wrapper (by Ray Train)."""

    def __init__(self, booster: Any, data: TrainingData, state: NativeState) -> None:
        self.booster = booster
        self._task = data.task
        self._n_features = data.n_features
        self._state = state

    def predict(self, X: np.ndarray) -> Scores:
        raw = np.asarray(self.booster.predict(to_float32_grid(X)), dtype=np.float64)
        if not self._task.is_classification:
            return Scores(raw, None)
        probabilities = raw if raw.ndim == 2 else np.column_stack([1 - raw, raw])
        return Scores(probabilities.argmax(axis=1), probabilities)

    def to_onnx(self) -> bytes:
        onnxmltools = _import("onnxmltools")
        from onnxmltools.convert.common.data_types import FloatTensorType

        model = onnxmltools.convert_lightgbm(
            self.booster, initial_types=[(INPUT_NAME, FloatTensorType([None, self._n_features]))],
            target_opset=ONNX_OPSET, zipmap=False)
        return _batch_dimension_free(model)

    def native_state(self) -> NativeState:
        return self._state


def booster_model(kind: str, native: bytes, data: TrainingData) -> Any:
    """The model the controller gates, from a booster's native text (LightGBM model text,
    XGBoost JSON); `data` gives the task and the feature count (its rows are not used)."""
    if kind == "lightgbm":
        lgb = _import("lightgbm")
        text = snap_thresholds(native.decode())
        return LightGBMBoosterModel(lgb.Booster(model_str=text), data,
                                    NativeState(LIGHTGBM_FORMAT, {"model.txt": text.encode()}))
    xgb = _import("xgboost")
    estimator = (xgb.XGBClassifier if data.task.is_classification else xgb.XGBRegressor)()
    estimator.load_model(bytearray(native))
    # The converter reads the class count as trees / n_estimators (see XGBoostTrainer).
    estimator.set_params(n_estimators=estimator.get_booster().num_boosted_rounds())
    return BoostedModel(estimator, data, "xgboost", NativeState(XGBOOST_FORMAT,
                                                                {"model.json": native}))
