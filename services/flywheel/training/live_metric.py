"""The metric a model is judged by on joined labels, live: pure functions.

Live, only what a version predicted is known (classes or values, not probabilities), so the
live metric is the gate's metric when it can be computed from predictions (accuracy, f1,
mae, rmse) and otherwise the task's own: accuracy for classification, mae for regression.
"""

from __future__ import annotations

import numpy as np

from flywheel.common.spec import ModelSpec
from flywheel.training.gate import METRICS, metric

_FROM_PREDICTIONS = {"accuracy", "f1", "mae", "rmse"}


def live_metric_name(model: ModelSpec) -> str:
    if model.gate_metric in _FROM_PREDICTIONS:
        return model.gate_metric
    return "accuracy" if model.task.is_classification else "mae"


def error_metric_name(model: ModelSpec) -> str:
    """The error a regression model's triggers watch: the gate's rmse, else mae."""
    return "rmse" if model.gate_metric == "rmse" else "mae"


def live_value(name: str, y: np.ndarray, predicted: np.ndarray) -> float:
    return metric(name, y, predicted)


def worse_by(name: str, value: float, reference: float) -> float:
    """How much worse `value` is than `reference` on `name` (negative: better)."""
    return reference - value if METRICS.get(name, True) else value - reference
