"""Rolling accuracy, the dip, the recovery time and the version timeline of the demo."""

from __future__ import annotations

import pytest

from flywheel.demo.analysis import (
    Scored,
    accuracy,
    accuracy_by_version,
    recovery,
    rolling,
    settled_changes,
    version_changes,
)


def timeline(pieces: list[tuple[float, float, float, int]], per_second: int = 20) -> list[Scored]:
    """(start, end, accuracy, version) pieces -> predictions at a steady rate, where a share
    ``accuracy`` of each second's predictions is correct."""
    points = []
    for start, end, share, version in pieces:
        t = start
        while t < end - 1e-9:
            for i in range(per_second):
                points.append(Scored(t + i / per_second, version, i < round(share * per_second)))
            t += 1.0
    return points


def test_accuracy_counts_the_window_only():
    points = timeline([(0, 10, 1.0, 1), (10, 20, 0.5, 1)])
    assert accuracy(points, 0, 10) == 1.0
    assert accuracy(points, 10, 20) == 0.5
    assert accuracy(points, 30, 40) is None


def test_rolling_accuracy_follows_the_change():
    points = timeline([(0, 10, 1.0, 1), (10, 20, 0.5, 1)])
    values = dict(rolling(points, window_s=5, step_s=1))
    assert values[5.0] == 1.0
    assert values[19.0] == 0.5
    assert 0.5 < values[12.0] < 1.0


def test_recovery_measures_dip_and_time_to_reach_the_target():
    points = timeline([(0, 30, 0.95, 1), (30, 45, 0.55, 1), (45, 80, 0.95, 2)])
    found = recovery(points, drift_at=30, end=80, window_s=5)
    assert found.accuracy_before == pytest.approx(0.95)
    assert found.accuracy_dip == pytest.approx(0.55)
    assert found.target == pytest.approx(0.9025)
    # The first 5 s window wholly after the drift reaching 90.25 % ends a few seconds after 45.
    assert 15 <= found.seconds_to_recover <= 20
    assert found.recovered
    assert found.accuracy_recovered == pytest.approx(0.95)


def test_no_recovery_when_accuracy_stays_low():
    points = timeline([(0, 30, 0.95, 1), (30, 80, 0.85, 2)])
    found = recovery(points, drift_at=30, end=80, window_s=5)
    assert not found.recovered
    assert found.seconds_to_recover is None


def test_version_timeline():
    points = timeline([(0, 5, 1.0, 1), (5, 8, 1.0, 3), (8, 10, 1.0, 1), (10, 12, 0.5, 4)])
    changes = version_changes(points)
    assert [v for _, v in changes] == [1, 3, 1, 4]
    assert changes[2][0] == 8.0
    by_version = accuracy_by_version(points)
    assert by_version[4] == {"predictions": 40, "accuracy": 0.5}
    assert by_version[1]["predictions"] == 140


def test_a_swap_interleaving_old_and_new_answers_is_one_change():
    # In-flight requests of the old version answered among the new one's first: not a flap.
    answers = [1] * 30 + [2, 1, 2, 2, 1, 2] + [2] * 30 + [3, 2, 3] + [3] * 5
    changes = settled_changes(list(enumerate(answers)))
    assert [v for _, v in changes] == [1, 2, 3]
    assert settled_changes([(0, 1), (1, 1), (2, 2)]) == [(0, 1), (2, 2)]  # the last run counts
