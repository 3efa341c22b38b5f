"""The wait before restarting a service that exited: doubling, capped, forgiven once stable."""

from __future__ import annotations

import pytest

from flywheel.mesh.backoff import BackoffPolicy, RestartBackoff


def test_delays_double_up_to_the_cap():
    policy = BackoffPolicy(initial_s=0.5, factor=2.0, max_s=30.0)
    assert [policy.delay(n) for n in range(1, 10)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    assert policy.delay(10_000) == 30.0  # no overflow after a long crash loop


@pytest.mark.parametrize("bad", [
    {"initial_s": 0}, {"factor": 0.5}, {"initial_s": 5, "max_s": 1},
])
def test_nonsense_policies_are_refused(bad):
    with pytest.raises(ValueError):
        BackoffPolicy(**bad)
    with pytest.raises(ValueError):
        BackoffPolicy().delay(0)


def test_a_crash_loop_waits_longer_each_time():
    backoff = RestartBackoff(BackoffPolicy(initial_s=1, max_s=8, stable_after_s=60))
    now = 1000.0
    waits = []
    for _ in range(5):
        started = now
        now += 0.2  # dies at once
        waits.append(backoff.exited(started, now))
        assert backoff.waiting and not backoff.due(now)
        assert backoff.due(now + waits[-1])
        now += waits[-1]
        backoff.restarted()
        assert not backoff.waiting
    assert waits == [1, 2, 4, 8, 8]


def test_a_service_that_ran_long_enough_is_restarted_quickly_again():
    backoff = RestartBackoff(BackoffPolicy(initial_s=1, max_s=8, stable_after_s=60))
    for started in (0.0, 1.0, 3.0):
        backoff.exited(started, started + 0.5)
        backoff.restarted()
    assert backoff.failures_in_a_row == 3
    assert backoff.exited(100.0, 200.0) == 1  # ran 100 s: healthy, the count starts over
    assert backoff.failures_in_a_row == 1
