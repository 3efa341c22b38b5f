"""The offline promotion gate and the metrics it compares, as pure functions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn import metrics as skm

from flywheel.common.errors import InvalidArgument
from flywheel.common.spec import GateSpec

# metric -> True when higher is better
METRICS = {"accuracy": True, "f1": True, "roc_auc": True, "log_loss": False,
           "rmse": False, "mae": False}


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    metric: str
    candidate: float
    champion: float | None
    holdout: int
    decision: str


def metric(name: str, y_true: np.ndarray, predicted: np.ndarray,
           probabilities: np.ndarray | None = None) -> float:
    """`predicted`: classes (classification) or values (regression); `probabilities`: one
    column per class, in class order (two or more classes). Computed by scikit-learn; f1 is
    the positive class's for two classes and the macro average for more; roc_auc is one
    against the rest, macro averaged, for more than two. NaN where a metric is undefined
    (no rows; roc_auc with one class present)."""
    y_true = np.asarray(y_true, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.float64)
    if len(y_true) == 0:
        return float("nan")
    if name == "accuracy":
        return float(skm.accuracy_score(y_true, predicted))
    if name == "rmse":
        return float(skm.root_mean_squared_error(y_true, predicted))
    if name == "mae":
        return float(skm.mean_absolute_error(y_true, predicted))
    if name == "f1":
        binary = set(np.unique(np.concatenate([y_true, predicted]))) <= {0.0, 1.0}
        return float(skm.f1_score(y_true, predicted, average="binary" if binary else "macro",
                                  zero_division=0.0))
    if name not in ("log_loss", "roc_auc"):
        raise InvalidArgument(f"unknown metric {name!r}", field="metric")
    if probabilities is None:
        raise InvalidArgument(f"metric {name} needs probabilities", field="metric")
    probabilities = np.asarray(probabilities, dtype=np.float64)
    classes = np.arange(probabilities.shape[1])
    if name == "log_loss":
        # A model's float32 outputs sum to one within float32 rounding only.
        rows = probabilities.sum(axis=1, keepdims=True)
        return float(skm.log_loss(y_true, probabilities / np.where(rows > 0, rows, 1.0),
                                  labels=classes))
    if len(np.unique(y_true)) < 2:  # one class present: the area is undefined
        return float("nan")
    try:
        if len(classes) == 2:
            return float(skm.roc_auc_score(y_true, probabilities[:, 1]))
        return float(skm.roc_auc_score(y_true, probabilities, multi_class="ovr",
                                       labels=classes))
    except ValueError:  # a class absent from the holdout: the area is undefined
        return float("nan")


def decide(spec: GateSpec, name: str, candidate: float, champion: float | None,
           holdout: int, *, newer: bool = True) -> GateDecision:
    """Promote when the holdout is big enough and, with a champion, the candidate beats it on
    `name` by at least `min_improvement`.

    A tie: with `min_improvement` 0, a candidate exactly as good as the champion passes when
    it learned from more recent data (`newer`), since after a drift two equally scored models
    are not equally current (two majority-class models would otherwise block every retrain);
    with a positive `min_improvement`, the gain must reach it, so a tie is refused.
    """
    higher = METRICS.get(name, True)
    if holdout < spec.min_holdout:
        return GateDecision(False, name, candidate, champion, holdout,
                            f"refused: holdout {holdout} < min_holdout {spec.min_holdout}")
    if not np.isfinite(candidate):
        return GateDecision(False, name, candidate, champion, holdout,
                            f"refused: candidate {name} is not a number")
    if champion is None or not np.isfinite(champion):
        return GateDecision(True, name, candidate, champion, holdout,
                            f"promoted: no champion to beat; {name} {candidate:.4f}")
    gain = candidate - champion if higher else champion - candidate
    if spec.min_improvement > 0:
        passed, rule = gain >= spec.min_improvement, f">= {spec.min_improvement}"
    else:
        passed = gain > 0 or (gain == 0 and newer)
        rule = "> 0, or = 0 on newer data" + ("" if newer else " (it is not newer)")
    verdict = "promoted" if passed else "refused"
    return GateDecision(passed, name, candidate, champion, holdout,
                        f"{verdict}: candidate {name} {candidate:.4f} vs champion "
                        f"{champion:.4f} (gain {gain:+.4f}, needed {rule})")
