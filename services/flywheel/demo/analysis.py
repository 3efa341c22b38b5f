"""From scored predictions to the numbers the demo reports: rolling accuracy, the dip after
the drift, the time to recover. Pure functions over plain tuples, no I/O."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Scored:
    """One answered prediction: when (seconds since the start), which version, whether the
    predicted class matched the ground truth the world holds for that customer."""

    t: float
    version: int
    correct: bool


@dataclass(frozen=True)
class Recovery:
    accuracy_before: float | None
    accuracy_dip: float | None
    accuracy_recovered: float | None
    target: float | None
    seconds_to_recover: float | None

    @property
    def recovered(self) -> bool:
        return self.seconds_to_recover is not None


def accuracy(points: Sequence[Scored], start: float, end: float) -> float | None:
    """Accuracy of the predictions made in [start, end); None when there are none."""
    times = [p.t for p in points]
    lo, hi = bisect.bisect_left(times, start), bisect.bisect_left(times, end)
    if hi <= lo:
        return None
    return sum(p.correct for p in points[lo:hi]) / (hi - lo)


def rolling(
    points: Sequence[Scored], window_s: float, step_s: float, end: float | None = None
) -> list[tuple[float, float]]:
    """(t, accuracy over (t - window, t]) every ``step_s``; ``points`` sorted by time."""
    if not points:
        return []
    end = points[-1].t if end is None else end
    times = [p.t for p in points]
    prefix = [0]
    for point in points:
        prefix.append(prefix[-1] + point.correct)
    out = []
    t = min(window_s, end)
    while t <= end + 1e-9:
        lo, hi = bisect.bisect_right(times, t - window_s), bisect.bisect_right(times, t)
        if hi > lo:
            out.append((round(t, 3), (prefix[hi] - prefix[lo]) / (hi - lo)))
        t += step_s
    return out


def recovery(
    points: Sequence[Scored],
    drift_at: float,
    end: float,
    window_s: float = 5.0,
    target_ratio: float = 0.95,
    warmup_s: float = 2.0,
    final_s: float = 10.0,
) -> Recovery:
    """``before``: accuracy from ``warmup_s`` to the drift. ``dip``: the lowest rolling
    accuracy after it. Recovered at the end of the first rolling window lying wholly after
    the drift whose accuracy is at least ``target_ratio * before``; ``accuracy_recovered``
    is the accuracy over the last ``final_s`` seconds (from the recovery at the earliest)."""
    before = accuracy(points, min(warmup_s, drift_at / 2), drift_at)
    after = [(t, a) for t, a in rolling(points, window_s, 0.5, end) if t - window_s >= drift_at]
    dip = min((a for _, a in after), default=None)
    if before is None:
        return Recovery(None, dip, None, None, None)
    target = target_ratio * before
    recovered_at = next((t for t, a in after if a >= target), None)
    final_start = max(end - final_s, recovered_at if recovered_at is not None else drift_at)
    final = accuracy(points, final_start, end + 1e-9)
    seconds = None if recovered_at is None else round(recovered_at - drift_at, 2)
    return Recovery(before, dip, final, target, seconds)


def version_changes(points: Sequence[Scored]) -> list[tuple[float, int]]:
    """(t, version) each time the answering version changed, the first one included."""
    return settled_changes([(point.t, point.version) for point in points])


# A version must answer this many requests in a row to count as a change: around a swap,
# requests already in flight are still answered by the old version, interleaved with the new.
SETTLE_POINTS = 10


def settled_changes(points: Sequence[tuple[Any, int]],
                    settle: int = SETTLE_POINTS) -> list[tuple[Any, int]]:
    """(key, version) where the answering version changed, in order, the first included; a
    run shorter than `settle` (the interleaving of a swap) is not a change, except the last."""
    runs: list[list] = []  # [first key, version, length]
    for key, version in points:
        if runs and runs[-1][1] == version:
            runs[-1][2] += 1
        else:
            runs.append([key, version, 1])
    changes: list[tuple[Any, int]] = []
    for index, (key, version, length) in enumerate(runs):
        if length < settle and 0 < index < len(runs) - 1:
            continue
        if not changes or changes[-1][1] != version:
            changes.append((key, version))
    return changes


def accuracy_by_version(points: Sequence[Scored]) -> dict[int, dict[str, float]]:
    """Per version: how many predictions it answered and its accuracy on them."""
    totals: dict[int, list[int]] = {}
    for point in points:
        entry = totals.setdefault(point.version, [0, 0])
        entry[0] += 1
        entry[1] += point.correct
    return {v: {"predictions": n, "accuracy": round(c / n, 4)} for v, (n, c) in totals.items()}


