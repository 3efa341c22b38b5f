"""Prequential accounting (test, then train): every row is scored by the version serving when
it arrived, before its label can teach the mesh anything. Pure functions over arrays in file
order, no I/O.

A row's loss is 0 or 1 (wrong class) for classification, its absolute error for regression;
the metric of a set of rows is accuracy (1 - mean loss) or MAE (mean loss). A row the mesh did
not score (lost) has NaN as its prediction and counts nowhere; the static model is judged on
the same rows as the mesh, so the two figures compare like with like.

Recovery after a drift at row ``d``: the pre-drift level is the metric over the ``window``
rows before ``d`` (from the previous drift at the earliest). The flywheel has recovered at
the first row ``e`` such that the ``window`` rows before ``e`` lie wholly after the drift
(``e - window >= d``) and their metric is back within ``tolerance`` (relative) of that
level: accuracy at least ``(1 - tolerance) * before``, MAE at most ``(1 + tolerance) *
before``. Rows to recover: ``e - d`` (at least one window); none if the next drift or the end
of the file comes first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Metric:
    name: str  # accuracy or mae
    higher_is_better: bool

    @classmethod
    def for_task(cls, classification: bool) -> Metric:
        return cls("accuracy", True) if classification else cls("mae", False)

    def losses(self, labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
        """Per row: the loss, NaN where the row was not scored."""
        if self.higher_is_better:
            return np.where(np.isnan(predicted), np.nan, (predicted != labels).astype(np.float64))
        return np.abs(predicted - labels)

    def of_losses(self, mean_loss: float) -> float:
        return 1.0 - mean_loss if self.higher_is_better else mean_loss

    def within(self, value: float, level: float, tolerance: float) -> bool:
        if self.higher_is_better:
            return value >= (1.0 - tolerance) * level
        return value <= (1.0 + tolerance) * level


@dataclass(frozen=True)
class Outcomes:
    """Per row of the replayed file: the label, the mesh's prediction and the static
    model's (NaN where not scored), and the version that answered (0: none)."""

    labels: np.ndarray
    predicted: np.ndarray
    static: np.ndarray
    versions: np.ndarray

    @property
    def scored(self) -> np.ndarray:
        return ~np.isnan(self.predicted)

    def static_on_scored(self) -> np.ndarray:
        return np.where(self.scored, self.static, np.nan)


class Rolling:
    """The metric of the rows in [start, end) from prefix sums: O(1) per query."""

    def __init__(self, metric: Metric, losses: np.ndarray) -> None:
        self.metric = metric
        valid = ~np.isnan(losses)
        self._count = np.concatenate([[0], np.cumsum(valid)])
        self._sum = np.concatenate([[0.0], np.cumsum(np.where(valid, losses, 0.0))])

    def count(self, start: int, end: int) -> int:
        return int(self._count[end] - self._count[start])

    def value(self, start: int, end: int) -> float | None:
        n = self.count(start, end)
        if n == 0:
            return None
        return self.metric.of_losses(float(self._sum[end] - self._sum[start]) / n)

    def values_ending(self, ends: np.ndarray, width: int) -> np.ndarray:
        """The metric of the ``width`` rows before each end (NaN where none was scored)."""
        starts = np.maximum(ends - width, 0)
        counts = self._count[ends] - self._count[starts]
        sums = self._sum[ends] - self._sum[starts]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        return 1.0 - mean if self.metric.higher_is_better else mean


def overall(metric: Metric, losses: np.ndarray) -> float | None:
    return Rolling(metric, losses).value(0, len(losses))


def windows(metric: Metric, outcomes: Outcomes, width: int) -> list[dict[str, Any]]:
    """The metric of each run of ``width`` rows (the last may be shorter), the mesh's and the
    static model's on the same rows, and the versions that answered in it."""
    mesh = Rolling(metric, metric.losses(outcomes.labels, outcomes.predicted))
    static = Rolling(metric, metric.losses(outcomes.labels, outcomes.static_on_scored()))
    out = []
    for start in range(0, len(outcomes.labels), width):
        end = min(start + width, len(outcomes.labels))
        served = outcomes.versions[start:end]
        out.append({
            "start": start, "end": end, "scored": mesh.count(start, end),
            metric.name: _round(mesh.value(start, end)),
            f"static_{metric.name}": _round(static.value(start, end)),
            "versions": sorted({int(v) for v in served[served > 0]}),
        })
    return out


def recovery(metric: Metric, losses: np.ndarray, drift_rows: Sequence[int], width: int,
             tolerance: float) -> list[dict[str, Any]]:
    """For each drift: the level before, the worst window after, the rows to recover (see
    the module's docstring), None where it did not."""
    rolling = Rolling(metric, losses)
    rows = len(losses)
    bounds = sorted({d for d in drift_rows if 0 < d < rows})
    out = []
    for index, drift in enumerate(bounds):
        previous = bounds[index - 1] if index else 0
        following = bounds[index + 1] if index + 1 < len(bounds) else rows
        before = rolling.value(max(previous, drift - width), drift)
        ends = np.arange(drift + width, following + 1)
        after = rolling.values_ending(ends, width) if len(ends) else np.array([])
        finite = after[~np.isnan(after)]
        worst = None
        if len(finite):
            worst = float(finite.min() if metric.higher_is_better else finite.max())
        recovered_at = None
        if before is not None:
            for end, value in zip(ends, after, strict=True):
                if not np.isnan(value) and metric.within(float(value), before, tolerance):
                    recovered_at = int(end)
                    break
        out.append({
            "drift_at": drift,
            "before": _round(before),
            "worst": _round(worst),
            "recovered": recovered_at is not None,
            "rows_to_recover": None if recovered_at is None else recovered_at - drift,
        })
    return out


def version_changes(versions: np.ndarray) -> list[tuple[int, int]]:
    """(row, version) each time the answering version changed, the first one included (a
    swap's interleaving of old and new is no change: see demo.analysis.settled_changes)."""
    from flywheel.demo.analysis import settled_changes

    return settled_changes([(int(row), int(versions[row]))
                            for row in np.flatnonzero(versions > 0)])


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def summary(metric: Metric, outcomes: Outcomes, width: int, drift_rows: Sequence[int],
            tolerance: float) -> dict[str, Any]:
    """The figures of a replay: overall (mesh and static, on the same rows), per window, and
    the recovery after each drift (the static model's beside the mesh's)."""
    mesh_losses = metric.losses(outcomes.labels, outcomes.predicted)
    static_losses = metric.losses(outcomes.labels, outcomes.static_on_scored())
    mesh, static = overall(metric, mesh_losses), overall(metric, static_losses)
    gain = None
    if mesh is not None and static is not None:
        gain = mesh - static if metric.higher_is_better else static - mesh
    recoveries = recovery(metric, mesh_losses, drift_rows, width, tolerance)
    static_recoveries = recovery(metric, static_losses, drift_rows, width, tolerance)
    for entry, baseline in zip(recoveries, static_recoveries, strict=True):
        entry["static_before"] = baseline["before"]
        entry["static_worst"] = baseline["worst"]
        entry["static_rows_to_recover"] = baseline["rows_to_recover"]
    return {
        "metric": metric.name,
        f"prequential_{metric.name}": _round(mesh),
        f"static_prequential_{metric.name}": _round(static),
        "gain": _round(gain),
        "scored": int(outcomes.scored.sum()),
        "windows": windows(metric, outcomes, width),
        "window": width,
        "drifts": sorted(set(drift_rows)),
        "recovery": recoveries,
        "recovery_tolerance": tolerance,
    }
