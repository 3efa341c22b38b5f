"""The demo's picture: rolling accuracy over time, the drift, every version change, and
the candidates refused and champions rolled back."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def accuracy_plot(
    path: Path,
    rolling: Sequence[tuple[float, float]],
    drift_at: float,
    changes: Sequence[tuple[float, int]],
    target: float | None,
    title: str,
    refusals: Sequence[tuple[float, int]] = (),
    rollbacks: Sequence[tuple[float, int]] = (),
) -> Path:
    """Writes a PNG to ``path`` (parents created) and returns it. ``refusals``: (t, the
    refused candidate); ``rollbacks``: (t, the champion it returned to)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(figsize=(10, 4.5), dpi=110)
    try:
        if rolling:
            times, values = zip(*rolling, strict=True)
            axes.plot(times, values, color="#1f77b4", linewidth=1.6, label="rolling accuracy (5 s)")
        axes.axvline(drift_at, color="#d62728", linewidth=2, label="concept drift")
        if target is not None:
            axes.axhline(target, color="#7f7f7f", linestyle="--", linewidth=1,
                         label="95% of the pre-drift accuracy")
        for index, (t, version) in enumerate(changes):
            axes.axvline(t, color="#2ca02c", linestyle=":", linewidth=1.2,
                         label="version now serving" if index == 0 else None)
            axes.annotate(f"v{version}", (t, 1.0), xytext=(3, -12), textcoords="offset points",
                          color="#2ca02c", fontsize=9)
        mark_refusals_and_rollbacks(axes, refusals, rollbacks)
        axes.set_ylim(0.3, 1.02)
        axes.set_xlabel("seconds since the start of the demo")
        axes.set_ylabel("accuracy on the ground truth")
        axes.set_title(title, fontsize=10)
        axes.grid(alpha=0.3)
        axes.legend(loc="lower left", fontsize=8)
        figure.tight_layout()
        figure.savefig(path)
    finally:
        plt.close(figure)
    return path


def mark_refusals_and_rollbacks(axes, refusals: Sequence[tuple[float, int]],
                                rollbacks: Sequence[tuple[float, int]]) -> None:
    """Red crosses along the bottom at each refused candidate, dashed lines at each
    rollback; x in the plot's own units (seconds for the demo, rows for the replay)."""
    if refusals:
        times = [t for t, _ in refusals]
        axes.plot(times, [0.06] * len(times), linestyle="none", marker="x", markersize=9,
                  markeredgewidth=2, color="#d62728", transform=axes.get_xaxis_transform(),
                  label="candidate refused")
        for t, version in refusals:
            axes.annotate(f"v{version}", (t, 0.06), xycoords=("data", "axes fraction"),
                          xytext=(4, 4), textcoords="offset points", color="#d62728", fontsize=8)
    for index, (t, version) in enumerate(rollbacks):
        axes.axvline(t, color="#ff7f0e", linestyle="--", linewidth=1.4,
                     label="rollback" if index == 0 else None)
        axes.annotate(f"back to v{version}", (t, 0.92), xycoords=("data", "axes fraction"),
                      xytext=(3, 0), textcoords="offset points", color="#ff7f0e", fontsize=8)
