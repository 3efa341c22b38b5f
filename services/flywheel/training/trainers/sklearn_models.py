"""The scikit-learn trainers: logistic (classification), ridge (regression) and mlp (both).

Each is a pipeline: standard scaling of the numeric columns and one-hot codes of the
categorical ones, then the model. The pipeline exports through skl2onnx, and its native
state is the whole pipeline through skops (a format that loads without executing code; only
scikit-learn and numpy types are accepted on load).

Fine-tuning keeps the champion's preprocessing (so its weights keep their meaning) and
continues its model on the recent window:
- logistic: a few lbfgs iterations started from the champion's weights (warm start);
- ridge: the champion's coefficients plus a ridge fit of what they get wrong, so `alpha` is
  the pull toward the champion;
- mlp: a few epochs of Adam started from the champion's weights (warm start).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from flywheel.common.spec import Task
from flywheel.training.scoring import Scores
from flywheel.training.trainers.base import INPUT_NAME, NativeState, TrainerError, TrainingData
from flywheel.training.trainers.params import LogisticParams, MLPParams, RidgeParams

FORMAT = "sklearn-skops"
_STATE_FILE = "pipeline.skops"
# Types a stored pipeline may hold: anything else in the file refuses the load.
_TRUSTED_PREFIXES = ("sklearn.", "numpy.")


class SklearnModel:
    def __init__(self, pipeline: Any, task: Task, n_features: int) -> None:
        self.pipeline = pipeline
        self._task = task
        self._n_features = n_features

    def predict(self, X: np.ndarray) -> Scores:
        if self._task.is_classification:
            probabilities = self.pipeline.predict_proba(X)
            return Scores(self.pipeline.classes_[probabilities.argmax(axis=1)], probabilities)
        return Scores(np.asarray(self.pipeline.predict(X), dtype=np.float64), None)

    def to_onnx(self) -> bytes:
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import FloatTensorType

        head = self.pipeline.steps[-1][1]
        options = {id(head): {"zipmap": False}} if self._task.is_classification else None
        onnx_model = convert_sklearn(
            self.pipeline, name="flywheel",
            initial_types=[(INPUT_NAME, FloatTensorType([None, self._n_features]))],
            options=options,
        )
        return onnx_model.SerializeToString()

    def native_state(self) -> NativeState:
        import skops.io

        return NativeState(FORMAT, {_STATE_FILE: skops.io.dumps(self.pipeline)})


def load_pipeline(state: NativeState) -> Any:
    import skops.io

    if state.format != FORMAT or _STATE_FILE not in state.files:
        raise TrainerError(f"native state {state.format!r} is not a scikit-learn pipeline")
    data = state.files[_STATE_FILE]
    untrusted = skops.io.get_untrusted_types(data=data)
    refused = [t for t in untrusted if not t.startswith(_TRUSTED_PREFIXES)]
    if refused:
        raise TrainerError(f"native state holds types outside scikit-learn: {refused}")
    return skops.io.loads(data, trusted=untrusted)


def _preprocessing(data: TrainingData) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    if not data.categorical:
        return StandardScaler()
    numeric = [i for i in range(data.n_features) if i not in data.categorical]
    columns = sorted(data.categorical)
    onehot = OneHotEncoder(categories=[np.arange(float(data.categorical[i])) for i in columns],
                           handle_unknown="ignore", sparse_output=False)
    parts = [("codes", onehot, columns)]
    if numeric:
        parts.insert(0, ("numeric", StandardScaler(), numeric))
    return ColumnTransformer(parts)


def _pipeline(data: TrainingData, head: Any) -> Any:
    from sklearn.pipeline import Pipeline

    return Pipeline([("prep", _preprocessing(data)), ("model", head)])


def _labels(data: TrainingData) -> np.ndarray:
    return data.y.astype(np.int64) if data.task.is_classification else data.y


def _continue(parent: NativeState, data: TrainingData, adjust) -> SklearnModel:
    """Loads the champion's pipeline and lets `adjust(head, transformed X)` continue its model
    (the preprocessing stays the champion's)."""
    pipeline = load_pipeline(parent)
    transformed = pipeline[:-1].transform(data.X)
    with warnings.catch_warnings():
        # A bounded warm start stops before convergence on purpose.
        warnings.simplefilter("ignore")
        adjust(pipeline.steps[-1][1], transformed)
    return SklearnModel(pipeline, data.task, data.n_features)


class LogisticTrainer:
    name = "logistic"
    native_format = FORMAT

    def __init__(self, params: LogisticParams) -> None:
        self.params = params

    def fit(self, data: TrainingData, parent: NativeState | None = None) -> SklearnModel:
        from sklearn.linear_model import LogisticRegression

        if not data.task.is_classification:
            raise TrainerError("trainer logistic is for classification; use ridge or mlp")
        p = self.params
        if parent is not None:
            def adjust(head, X):
                head.set_params(warm_start=True, max_iter=p.fine_tune_max_iter, C=p.C)
                head.fit(X, _labels(data))
            return _continue(parent, data, adjust)
        pipeline = _pipeline(data, LogisticRegression(C=p.C, max_iter=p.max_iter))
        pipeline.fit(data.X, _labels(data))
        return SklearnModel(pipeline, data.task, data.n_features)


class RidgeTrainer:
    name = "ridge"
    native_format = FORMAT

    def __init__(self, params: RidgeParams) -> None:
        self.params = params

    def fit(self, data: TrainingData, parent: NativeState | None = None) -> SklearnModel:
        from sklearn.linear_model import Ridge

        if data.task.is_classification:
            raise TrainerError("trainer ridge is for regression; use logistic or mlp")
        alpha = self.params.alpha
        if parent is not None:
            def adjust(head, X):
                correction = Ridge(alpha=alpha).fit(X, data.y - head.predict(X))
                head.coef_ = head.coef_ + correction.coef_
                head.intercept_ = head.intercept_ + correction.intercept_
            return _continue(parent, data, adjust)
        pipeline = _pipeline(data, Ridge(alpha=alpha))
        pipeline.fit(data.X, data.y)
        return SklearnModel(pipeline, data.task, data.n_features)


class MLPTrainer:
    name = "mlp"
    native_format = FORMAT

    def __init__(self, params: MLPParams) -> None:
        self.params = params

    def fit(self, data: TrainingData, parent: NativeState | None = None) -> SklearnModel:
        from sklearn.neural_network import MLPClassifier, MLPRegressor

        p = self.params
        if parent is not None:
            def adjust(head, X):
                head.set_params(warm_start=True, max_iter=p.fine_tune_max_iter)
                head.fit(X, _labels(data))
            return _continue(parent, data, adjust)
        kind = MLPClassifier if data.task.is_classification else MLPRegressor
        head = kind(hidden_layer_sizes=p.hidden_layer_sizes, alpha=p.alpha,
                    learning_rate_init=p.learning_rate_init, max_iter=p.max_iter,
                    random_state=p.random_state)
        pipeline = _pipeline(data, head)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # max_iter reached: a bounded fit is the intent
            pipeline.fit(data.X, _labels(data))
        return SklearnModel(pipeline, data.task, data.n_features)
