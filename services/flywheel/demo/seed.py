"""Cold start: the first model, trained on a labeled seed set and exported to ONNX, enters the
registry through the bring-your-own-model path and is promoted like any other version."""

from __future__ import annotations

import numpy as np


def train_seed_model(
    features: np.ndarray, labels: np.ndarray, seed: int, regression: bool = False
) -> tuple[bytes, float]:
    """A logistic regression (a ridge regression for ``regression``) as ONNX bytes (float32
    input ``features``; outputs ``label`` and ``probabilities``, or ``variable``), and its
    score on a quarter of the seed set held out (accuracy, or R squared)."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression, Ridge

    split = len(labels) * 3 // 4
    model = Ridge() if regression else LogisticRegression(max_iter=500, random_state=seed)
    model.fit(features[:split], labels[:split])
    holdout_score = float(model.score(features[split:], labels[split:]))
    onnx_model = convert_sklearn(
        model,
        initial_types=[("features", FloatTensorType([None, features.shape[1]]))],
        options={} if regression else {id(model): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    return onnx_model.SerializeToString(), holdout_score
