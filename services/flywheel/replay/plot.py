"""The replay's picture: the metric per window of rows, the flywheel's against the static
starting champion's, with the drifts, every version change, the candidates refused and
the champions rolled back."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flywheel.demo.plot import mark_refusals_and_rollbacks


def replay_plot(path: Path, figures: dict[str, Any], changes: Sequence[tuple[int, int]],
                title: str, refusals: Sequence[tuple[int, int]] = (),
                rollbacks: Sequence[tuple[int, int]] = ()) -> Path:
    """Writes a PNG to ``path`` (parents created) and returns it. ``figures``: what
    ``prequential.summary`` returns; ``refusals`` and ``rollbacks``: (row reached, version)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    metric = figures["metric"]
    windows = [w for w in figures["windows"] if w[metric] is not None]
    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(figsize=(10, 4.5), dpi=110)
    try:
        ends = [w["end"] for w in windows]
        axes.plot(ends, [w[metric] for w in windows], color="#1f77b4", linewidth=1.6,
                  marker=".", label=f"flywheel ({metric} per {figures['window']} rows)")
        axes.plot(ends, [w[f"static_{metric}"] for w in windows], color="#7f7f7f",
                  linewidth=1.2, linestyle="--", label="starting champion kept static")
        for index, drift in enumerate(figures["drifts"]):
            axes.axvline(drift, color="#d62728", linewidth=2,
                         label="concept drift" if index == 0 else None)
        for index, (row, version) in enumerate(changes):
            axes.axvline(row, color="#2ca02c", linestyle=":", linewidth=1.2,
                         label="version now serving" if index == 0 else None)
            axes.annotate(f"v{version}", (row, 1.0), xycoords=("data", "axes fraction"),
                          xytext=(3, -12), textcoords="offset points", color="#2ca02c",
                          fontsize=9)
        mark_refusals_and_rollbacks(axes, refusals, rollbacks)
        axes.set_xlabel("rows of the history (file order)")
        axes.set_ylabel(f"prequential {metric}")
        axes.set_title(title, fontsize=10)
        axes.grid(alpha=0.3)
        axes.legend(loc="lower left", fontsize=8)
        figure.tight_layout()
        figure.savefig(path)
    finally:
        plt.close(figure)
    return path
