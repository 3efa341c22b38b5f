"""Triggers, PSI and the offline gate: pure functions."""

from __future__ import annotations

import numpy as np

from flywheel.common.spec import GateSpec, TriggerSpec
from flywheel.training.gate import decide, metric
from flywheel.training.triggers import Observations, fire, max_psi, psi

SPEC = TriggerSpec(every_n_labels=100, accuracy_below=0.8, accuracy_drop=0.05, window=50,
                   psi_above=0.2, schedule_seconds=3600, debounce_seconds=10)


def test_every_n_labels():
    assert fire(SPEC, Observations(new_labels=99, seconds_since_last_run=20)) is None
    assert fire(SPEC, Observations(new_labels=100)).startswith("every_n_labels")


def test_debounce_holds_everything():
    assert fire(SPEC, Observations(new_labels=1000, seconds_since_last_run=5)) is None


def test_accuracy_below_and_drop():
    below = Observations(new_labels=1, champion_accuracy=0.7, seconds_since_last_run=20)
    assert fire(SPEC, below).startswith("accuracy_below")
    drop = Observations(new_labels=1, champion_accuracy=0.85, champion_training_accuracy=0.95,
                        seconds_since_last_run=20)
    assert fire(SPEC, drop).startswith("accuracy_drop")
    steady = Observations(new_labels=1, champion_accuracy=0.93, champion_training_accuracy=0.95,
                          seconds_since_last_run=20)
    assert fire(SPEC, steady) is None
    # No new labels: retraining on the same data is pointless.
    assert fire(SPEC, Observations(new_labels=0, champion_accuracy=0.5,
                                   seconds_since_last_run=20)) is None


def test_psi_and_schedule():
    drift = Observations(new_labels=1, max_psi=0.5, psi_feature="f03", seconds_since_last_run=20)
    assert "f03" in fire(SPEC, drift)
    assert fire(SPEC, Observations(new_labels=0, seconds_since_last_run=4000)).startswith(
        "schedule")


def test_psi_values():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=5000)
    assert psi(reference, rng.normal(size=5000)) < 0.02
    assert psi(reference, rng.normal(loc=1.0, size=5000)) > 0.25
    both = np.column_stack([reference, reference])
    shifted = np.column_stack([rng.normal(size=2000), rng.normal(loc=2, size=2000)])
    value, name = max_psi(both, shifted, ["a", "b"])
    assert name == "b" and value > 1


def test_gate():
    spec = GateSpec(metric="accuracy", min_improvement=0.0, min_holdout=100)
    assert decide(spec, "accuracy", 0.9, None, 150).passed
    assert not decide(spec, "accuracy", 0.9, None, 99).passed
    assert decide(spec, "accuracy", 0.91, 0.90, 150).passed
    # A tie passes on newer data only (min_improvement 0), never under a positive margin.
    assert decide(spec, "accuracy", 0.90, 0.90, 150).passed
    assert not decide(spec, "accuracy", 0.90, 0.90, 150, newer=False).passed
    assert not decide(spec, "accuracy", 0.85, 0.90, 150).passed
    strict = GateSpec(metric="accuracy", min_improvement=0.02, min_holdout=10)
    assert not decide(strict, "accuracy", 0.91, 0.90, 150).passed
    assert not decide(strict, "accuracy", 0.90, 0.90, 150).passed
    assert decide(strict, "accuracy", 0.93, 0.90, 150).passed
    lower = GateSpec(metric="rmse", min_improvement=0.0, min_holdout=10)
    assert decide(lower, "rmse", 1.0, 2.0, 50).passed and not decide(lower, "rmse", 2.0, 1.0, 50).passed


def test_metrics():
    y = np.array([0, 1, 1, 0])
    assert metric("accuracy", y, np.array([0, 1, 0, 0])) == 0.75
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]])
    assert metric("roc_auc", y, y, proba) == 1.0
    assert metric("rmse", np.array([1.0, 3.0]), np.array([2.0, 2.0])) == 1.0
