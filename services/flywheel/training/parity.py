"""The parity check: a candidate's ONNX export must answer as the native model does.

Both score the holdout; classifiers are compared on their probabilities, regressors on their
values relative to the spread of the labels (a tolerance of 1e-3 then means a thousandth of
a standard deviation). A candidate past the tolerance is refused with the figure.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flywheel.training.scoring import Scores


@dataclass(frozen=True)
class Parity:
    max_difference: float
    rows: int
    what: str  # "probability" or "value (relative)"

    def passed(self, tolerance: float) -> bool:
        return bool(self.max_difference <= tolerance)

    def describe(self, tolerance: float) -> str:
        return (f"ONNX export differs from the native model: max {self.what} difference "
                f"{self.max_difference:.3g} > parity_tolerance {tolerance:g} on {self.rows} "
                "holdout rows")


def compare(native: Scores, exported: Scores, y: np.ndarray, classification: bool) -> Parity:
    rows = len(native.predicted)
    if rows == 0:
        return Parity(0.0, 0, "probability" if classification else "value (relative)")
    if classification:
        if native.probabilities is not None and exported.probabilities is not None:
            gap = np.abs(np.asarray(native.probabilities, np.float64)
                         - np.asarray(exported.probabilities, np.float64))
            return Parity(float(gap.max()), rows, "probability")
        mismatch = np.mean(np.asarray(native.predicted) != np.asarray(exported.predicted))
        return Parity(float(mismatch), rows, "class (share of rows)")
    scale = float(np.std(y)) or 1.0
    gap = np.abs(np.asarray(native.predicted, np.float64)
                 - np.asarray(exported.predicted, np.float64)) / scale
    return Parity(float(gap.max()), rows, "value (relative)")
