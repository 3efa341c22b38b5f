"""When to restart a service that exited: exponential backoff, capped, forgiven after a while.

A service that keeps crashing at start would otherwise be restarted in a tight loop, burning
the CPU its neighbours need and flooding its log. Each exit in a row doubles the wait (from
``initial_s`` up to ``max_s``); a service that had run for ``stable_after_s`` before it
exited counts as healthy again, so its next restart is quick.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackoffPolicy:
    initial_s: float = 0.5
    factor: float = 2.0
    max_s: float = 30.0
    stable_after_s: float = 60.0

    def __post_init__(self) -> None:
        if self.initial_s <= 0 or self.factor < 1 or self.max_s < self.initial_s:
            raise ValueError(f"backoff needs 0 < initial <= max and factor >= 1: {self}")

    def delay(self, failures_in_a_row: int) -> float:
        """Seconds to wait before the restart that follows the n-th exit in a row (n >= 1)."""
        if failures_in_a_row < 1:
            raise ValueError("failures_in_a_row starts at 1")
        # Capped before the power can overflow: factor ** 1000 is not a float.
        exponent = min(failures_in_a_row - 1, 64)
        return min(self.max_s, self.initial_s * self.factor ** exponent)


class RestartBackoff:
    """The backoff of one service: call ``exited`` when it is found dead, restart it once
    ``due(now)``, call ``restarted`` when it was started again."""

    def __init__(self, policy: BackoffPolicy) -> None:
        self.policy = policy
        self.failures_in_a_row = 0
        self.restart_at: float | None = None

    def exited(self, started_at: float, now: float) -> float:
        """Records an exit of a process started at ``started_at``; returns the wait chosen."""
        if now - started_at >= self.policy.stable_after_s:
            self.failures_in_a_row = 0
        self.failures_in_a_row += 1
        wait = self.policy.delay(self.failures_in_a_row)
        self.restart_at = now + wait
        return wait

    @property
    def waiting(self) -> bool:
        return self.restart_at is not None

    def due(self, now: float) -> bool:
        return self.restart_at is not None and now >= self.restart_at

    def restarted(self) -> None:
        self.restart_at = None
