"""The offline promotion gate and the metrics it compares, as pure functions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
    """`predicted`: classes (classification) or values (regression)."""
    y_true = np.asarray(y_true, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.float64)
    if len(y_true) == 0:
        return float("nan")
    if name == "accuracy":
        return float(np.mean(predicted == y_true))
    if name == "rmse":
        return float(np.sqrt(np.mean((predicted - y_true) ** 2)))
    if name == "mae":
        return float(np.mean(np.abs(predicted - y_true)))
    if name == "f1":
        tp = float(np.sum((predicted == 1) & (y_true == 1)))
        fp = float(np.sum((predicted == 1) & (y_true != 1)))
        fn = float(np.sum((predicted != 1) & (y_true == 1)))
        return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)
    if probabilities is None:
        raise InvalidArgument(f"metric {name} needs probabilities", field="metric")
    if name == "log_loss":
        p = np.clip(probabilities[np.arange(len(y_true)), y_true.astype(int)], 1e-15, 1.0)
        return float(-np.mean(np.log(p)))
    if name == "roc_auc":
        score = probabilities[:, 1]
        order = np.argsort(score, kind="mergesort")
        ranks = np.empty(len(score))
        ranks[order] = np.arange(1, len(score) + 1)
        positives = y_true == 1
        n_pos, n_neg = positives.sum(), (~positives).sum()
        if n_pos == 0 or n_neg == 0:
            return float("nan")
        return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    raise InvalidArgument(f"unknown metric {name!r}", field="metric")


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
