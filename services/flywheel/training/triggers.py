"""Declarative retrain triggers, as pure functions of what was observed.

`fire` returns the reason of the first trigger that fires, or None. Debounce comes first: no
run sooner than `debounce_seconds` after the last one started. The data-driven triggers
(accuracy for classifiers, error for regression models, drift) also need at least one new
label since the last run: a run on the very same data would learn nothing new.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flywheel.common.spec import TriggerSpec


@dataclass(frozen=True)
class Observations:
    new_labels: int
    # Champion's accuracy over its last `window` joined labels; None with fewer than that.
    champion_accuracy: float | None = None
    # The champion's accuracy at training time (its holdout accuracy in the registry).
    champion_training_accuracy: float | None = None
    # Regression: the champion's live error (error_name: mae or rmse) over its last `window`
    # joined labels, and its error at training time (its holdout error in the registry).
    champion_error: float | None = None
    champion_training_error: float | None = None
    error_name: str = "mae"
    # The largest PSI of any feature, recent window against the champion's training data.
    max_psi: float | None = None
    psi_feature: str = ""
    # None when no run has started yet.
    seconds_since_last_run: float | None = None


def fire(spec: TriggerSpec, obs: Observations) -> str | None:
    since = obs.seconds_since_last_run
    if since is not None and since < spec.debounce_seconds:
        return None
    if spec.every_n_labels and obs.new_labels >= spec.every_n_labels:
        return f"every_n_labels: {obs.new_labels} new labels (>= {spec.every_n_labels})"
    if obs.new_labels > 0 and obs.champion_accuracy is not None:
        if spec.accuracy_below and obs.champion_accuracy < spec.accuracy_below:
            return (f"accuracy_below: champion accuracy {obs.champion_accuracy:.4f} < "
                    f"{spec.accuracy_below} over the last {spec.window} labels")
        if (spec.accuracy_drop and obs.champion_training_accuracy is not None
                and obs.champion_training_accuracy - obs.champion_accuracy > spec.accuracy_drop):
            return (f"accuracy_drop: champion accuracy {obs.champion_accuracy:.4f} is "
                    f"{obs.champion_training_accuracy - obs.champion_accuracy:.4f} below its "
                    f"training accuracy {obs.champion_training_accuracy:.4f} "
                    f"(> {spec.accuracy_drop})")
    if obs.new_labels > 0 and obs.champion_error is not None:
        name = obs.error_name
        if spec.error_above and obs.champion_error > spec.error_above:
            return (f"error_above: champion {name} {obs.champion_error:.4f} > "
                    f"{spec.error_above} over the last {spec.window} labels")
        if (spec.error_increase and obs.champion_training_error is not None
                and obs.champion_error - obs.champion_training_error > spec.error_increase):
            return (f"error_increase: champion {name} {obs.champion_error:.4f} is "
                    f"{obs.champion_error - obs.champion_training_error:.4f} above its "
                    f"training {name} {obs.champion_training_error:.4f} "
                    f"(> {spec.error_increase})")
    if (obs.new_labels > 0 and spec.psi_above and obs.max_psi is not None
            and obs.max_psi > spec.psi_above):
        return f"psi: feature {obs.psi_feature} drifted, PSI {obs.max_psi:.4f} > {spec.psi_above}"
    if spec.schedule_seconds and (since is None or since >= spec.schedule_seconds):
        return f"schedule: every {spec.schedule_seconds:g} s"
    return None


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10, floor: float = 1e-4) -> float:
    """Population stability index of one feature: bins are the reference's quantiles."""
    reference = np.asarray(reference, dtype=np.float64)
    current = np.asarray(current, dtype=np.float64)
    if len(reference) == 0 or len(current) == 0:
        return 0.0
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    expected = np.bincount(np.searchsorted(edges, reference, side="right"),
                           minlength=len(edges) + 1) / len(reference)
    actual = np.bincount(np.searchsorted(edges, current, side="right"),
                         minlength=len(edges) + 1) / len(current)
    expected = np.maximum(expected, floor)
    actual = np.maximum(actual, floor)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def max_psi(reference: np.ndarray, current: np.ndarray, names: list[str]) -> tuple[float, str]:
    """The largest per-feature PSI, and which feature it was."""
    best, which = 0.0, ""
    for column, name in enumerate(names):
        value = psi(reference[:, column], current[:, column])
        if value > best:
            best, which = value, name
    return best, which
