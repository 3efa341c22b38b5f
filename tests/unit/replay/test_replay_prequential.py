"""Prequential accounting: overall and per-window figures, the static model on the same rows,
the recovery rule after each drift, the version timeline."""

from __future__ import annotations

import numpy as np
import pytest

from flywheel.replay.prequential import (
    Metric,
    Outcomes,
    overall,
    recovery,
    summary,
    version_changes,
    windows,
)

ACCURACY = Metric.for_task(classification=True)
MAE = Metric.for_task(classification=False)


def correct_pattern(pieces: list[tuple[int, float]]) -> np.ndarray:
    """(rows, accuracy) pieces -> per-row losses (0 right, 1 wrong), the wrong ones spread
    evenly, so every stretch of a piece has its accuracy."""
    out = []
    for rows, accuracy in pieces:
        wrong_every = None if accuracy == 1 else round(1 / (1 - accuracy))
        out.extend(1.0 if wrong_every and (i % wrong_every == 0) else 0.0 for i in range(rows))
    return np.array(out)


def test_classification_losses_skip_the_rows_not_scored():
    labels = np.array([1, 0, 1, 1.0])
    predicted = np.array([1, 1, np.nan, 1.0])
    losses = ACCURACY.losses(labels, predicted)
    assert np.isnan(losses[2])
    assert overall(ACCURACY, losses) == pytest.approx(2 / 3)


def test_regression_is_judged_by_mae():
    labels = np.array([1.0, 2.0, 3.0])
    predicted = np.array([1.5, np.nan, 2.0])
    assert overall(MAE, MAE.losses(labels, predicted)) == pytest.approx(0.75)
    assert not MAE.higher_is_better and MAE.name == "mae"


def test_windows_compare_mesh_and_static_on_the_same_rows():
    labels = np.zeros(25)
    predicted = np.zeros(25)
    predicted[[3, 12]] = 1  # two mistakes
    predicted[20:] = np.nan  # lost: neither model is judged on them
    static = np.ones(25)  # always wrong
    versions = np.where(np.isnan(predicted), 0, np.where(np.arange(25) < 12, 1, 2))
    out = windows(ACCURACY, Outcomes(labels, predicted, static, versions), width=10)
    assert [(w["start"], w["end"], w["scored"]) for w in out] == [(0, 10, 10), (10, 20, 10),
                                                                  (20, 25, 0)]
    assert out[0]["accuracy"] == 0.9 and out[0]["static_accuracy"] == 0.0
    assert out[1]["versions"] == [1, 2]
    assert out[2]["accuracy"] is None and out[2]["static_accuracy"] is None


def test_recovery_counts_rows_until_a_whole_window_after_the_drift_is_back():
    # 0.9 before the drift at row 2000; 0.5 for 700 rows; 0.9 again after.
    losses = correct_pattern([(2000, 0.9), (700, 0.5), (2300, 0.9)])
    [entry] = recovery(ACCURACY, losses, [2000], width=500, tolerance=0.05)
    assert entry["before"] == pytest.approx(0.9, abs=0.01)
    assert entry["worst"] == pytest.approx(0.5, abs=0.01)
    # The 500 rows before row e must be at least 0.855 accurate: e - 500 lies a little before
    # 2700 (a few of the 0.5 rows fit in the tolerance), so e is near 2700 + 500.
    assert entry["recovered"] and 1100 < entry["rows_to_recover"] <= 1200


def test_no_recovery_before_the_next_drift_or_the_end():
    losses = correct_pattern([(1000, 1.0), (1000, 0.5), (1000, 1.0)])
    first, second = recovery(ACCURACY, losses, [1000, 2000], width=300, tolerance=0.05)
    assert not first["recovered"] and first["rows_to_recover"] is None
    # The second drift's level is the 0.5 just before it: recovered at the first full window.
    assert second["before"] == 0.5 and second["rows_to_recover"] == 300


def test_recovery_of_an_error_metric_looks_for_a_low_enough_error():
    losses = np.concatenate([np.full(1000, 1.0), np.full(400, 3.0), np.full(1000, 1.02)])
    [entry] = recovery(MAE, losses, [1000], width=200, tolerance=0.05)
    assert entry["before"] == 1.0 and entry["worst"] == 3.0
    # Within 5 % of 1.0: a window may still hold 3 of the rows at 3.0 (mean 1.0497).
    assert entry["rows_to_recover"] == 400 + 200 - 3
    [strict] = recovery(MAE, losses, [1000], width=200, tolerance=0.01)
    assert not strict["recovered"]  # 1.02 is never within 1 % of 1.0


def test_a_drift_outside_the_rows_is_ignored():
    assert recovery(ACCURACY, np.zeros(100), [0, 100, 500], width=10, tolerance=0.05) == []


def test_summary_reports_the_gain_over_the_static_model():
    labels = np.tile([0.0, 1.0], 1000)
    predicted = labels.copy()
    predicted[:200] = 1 - predicted[:200]  # the flywheel is wrong on the first 200 rows
    static = labels.copy()
    static[1000:] = 1 - static[1000:]  # the static model is wrong after row 1000
    versions = np.where(np.arange(2000) < 300, 1, 2)
    report = summary(ACCURACY, Outcomes(labels, predicted, static, versions), width=500,
                     drift_rows=[1000], tolerance=0.05)
    assert report["prequential_accuracy"] == 0.9
    assert report["static_prequential_accuracy"] == 0.5
    assert report["gain"] == 0.4
    assert report["scored"] == 2000 and len(report["windows"]) == 4
    [entry] = report["recovery"]
    assert entry["rows_to_recover"] == 500 and entry["static_rows_to_recover"] is None
    assert entry["static_before"] == 1.0 and entry["static_worst"] == 0.0


def test_version_changes_follow_the_rows_that_were_answered():
    versions = np.array([0] + [3] * 12 + [0] + [4] * 12 + [3] * 12)
    assert version_changes(versions) == [(1, 3), (14, 4), (26, 3)]
    # A swap: rows in flight still answered by v3 among v4's first ones; one change.
    swap = np.array([3] * 12 + [4, 3, 4, 3] + [4] * 12)
    assert [v for _, v in version_changes(swap)] == [3, 4]
