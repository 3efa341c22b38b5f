"""Trainers and ONNX scoring.

A `Trainer` fits on float features and exports ONNX with one float32 input named
`features` ([batch, n_features]). Classifiers export `label` (int64) and `probabilities`
(float32, no ZipMap); regressors export `variable`. The default is a scikit-learn pipeline
(standard scaling + logistic regression, or ridge), converted with skl2onnx.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from flywheel.common.spec import Task

INPUT_NAME = "features"


class Trainer(Protocol):
    def fit(self, X: np.ndarray, y: np.ndarray, task: Task) -> Any: ...

    def to_onnx(self, model: Any, n_features: int) -> bytes: ...


class SklearnTrainer:
    def __init__(self, max_iter: int = 300, l2: float = 1.0) -> None:
        self._max_iter = max_iter
        self._l2 = l2

    def estimator(self, task: Task) -> Any:
        from sklearn.linear_model import LogisticRegression, Ridge
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        head = (LogisticRegression(C=1.0 / self._l2, max_iter=self._max_iter)
                if task.is_classification else Ridge(alpha=self._l2))
        return Pipeline([("scale", StandardScaler()), ("model", head)])

    def fit(self, X: np.ndarray, y: np.ndarray, task: Task) -> Any:
        model = self.estimator(task)
        model.fit(X, y.astype(np.int64) if task.is_classification else y)
        return model

    def to_onnx(self, model: Any, n_features: int) -> bytes:
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import FloatTensorType

        options = None
        if hasattr(model, "predict_proba"):
            options = {id(model.steps[-1][1]): {"zipmap": False}}
        onnx_model = convert_sklearn(
            model, name="flywheel",
            initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
            options=options,
        )
        return onnx_model.SerializeToString()


@dataclass(frozen=True)
class Scores:
    predicted: np.ndarray  # classes or values
    probabilities: np.ndarray | None


class OnnxScorer:
    """An ONNX Runtime session over an artifact; finds its input and outputs by type."""

    def __init__(self, artifact: bytes, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(artifact, options, providers=["CPUExecutionProvider"])
        self._input = self.session.get_inputs()[0].name
        outputs = self.session.get_outputs()
        self._label = next((o.name for o in outputs if "int64" in o.type), outputs[0].name)
        self._proba = next((o.name for o in outputs
                            if "float" in o.type and o.name != self._label), None)

    def score(self, X: np.ndarray) -> Scores:
        results = self.session.run(None, {self._input: np.ascontiguousarray(X, np.float32)})
        named = dict(zip([o.name for o in self.session.get_outputs()], results, strict=True))
        predicted = np.asarray(named[self._label]).reshape(len(X), -1)[:, 0]
        probabilities = named.get(self._proba) if self._proba else None
        return Scores(predicted, None if probabilities is None else np.asarray(probabilities))
