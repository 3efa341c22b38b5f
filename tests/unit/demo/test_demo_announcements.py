"""Announcements of a run turned into its refusals and rollbacks, and both on the plots."""

from __future__ import annotations

from pathlib import Path

from flywheel.demo.announcements import REFUSED, ROLLED_BACK, Timeline
from flywheel.demo.plot import accuracy_plot
from flywheel.replay.plot import replay_plot
from flywheel.v1 import events_pb2

MODEL = "churn"


def announced(change: int, version: int, reason: str = "", previous: int = 0,
              model: str = MODEL) -> events_pb2.ModelVersionAnnounced:
    record = events_pb2.ModelVersionAnnounced(change=change, reason=reason)
    record.model_version.model_name = model
    record.model_version.version = version
    if previous:
        record.alias_changes.add(alias="champion", previous_version=previous, version=version)
    return record


def test_a_registration_no_promotion_follows_is_a_refusal_once_the_grace_passed():
    timeline = Timeline(MODEL, grace_s=2.0)
    assert timeline.feed(announced(events_pb2.MODEL_VERSION_CHANGE_REGISTERED, 3, "run r1: drift"),
                         10_000) == []
    assert timeline.expire(11_999) == []
    [refusal] = timeline.expire(12_000)
    assert (refusal.kind, refusal.version, refusal.at_ms, refusal.reason) == (
        REFUSED, 3, 10_000, "run r1: drift")
    assert timeline.expire(20_000) == []  # reported once
    assert timeline.times(REFUSED, 4_000) == [(6.0, 3)]


def test_a_promoted_or_shadowed_registration_is_no_refusal():
    timeline = Timeline(MODEL, grace_s=1.0)
    timeline.feed(announced(events_pb2.MODEL_VERSION_CHANGE_REGISTERED, 2), 1_000)
    timeline.feed(announced(events_pb2.MODEL_VERSION_CHANGE_PROMOTED, 2), 1_100)
    timeline.feed(announced(events_pb2.MODEL_VERSION_CHANGE_REGISTERED, 3), 2_000)
    timeline.feed(announced(events_pb2.MODEL_VERSION_CHANGE_SHADOWED, 3), 2_050)
    assert timeline.expire(60_000) == []
    assert timeline.events == []


def test_a_rollback_names_both_champions_and_other_models_are_ignored():
    timeline = Timeline(MODEL)
    assert timeline.feed(announced(events_pb2.MODEL_VERSION_CHANGE_ROLLED_BACK, 1, previous=9,
                                   model="other"), 500) == []
    [rollback] = timeline.feed(announced(events_pb2.MODEL_VERSION_CHANGE_ROLLED_BACK, 4,
                                         "live gate: accuracy fell", previous=5), 7_500)
    assert (rollback.kind, rollback.version, rollback.previous) == (ROLLED_BACK, 4, 5)
    assert rollback.describe(2_500, MODEL) == (
        "t=   5.0s  churn rolled back v5 -> v4 (live gate: accuracy fell)")


def test_the_demo_plot_marks_refusals_and_rollbacks(tmp_path: Path):
    path = accuracy_plot(tmp_path / "plots" / "accuracy.png",
                         [(t / 2, 0.8) for t in range(40)], 10.0, [(12.0, 2)], 0.76, "demo",
                         refusals=[(8.0, 3)], rollbacks=[(15.0, 2)])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_replay_plot_marks_refusals_and_rollbacks(tmp_path: Path):
    windows = [{"end": end, "accuracy": 0.8, "static_accuracy": 0.7} for end in (100, 200, 300)]
    figures = {"metric": "accuracy", "windows": windows, "window": 100, "drifts": [150]}
    path = replay_plot(tmp_path / "prequential.png", figures, [(180, 2)], "replay",
                       refusals=[(160, 3)], rollbacks=[(250, 1)])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_refusals_are_crosses_and_rollbacks_dashed_lines_each_in_the_legend_once():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from flywheel.demo.plot import mark_refusals_and_rollbacks

    figure, axes = plt.subplots()
    try:
        mark_refusals_and_rollbacks(axes, [(8.0, 3), (20.0, 5)], [(15.0, 2), (30.0, 4)])
        handles, labels = axes.get_legend_handles_labels()
        assert labels == ["candidate refused", "rollback"]
        crosses = handles[0]
        assert crosses.get_marker() == "x" and list(crosses.get_xdata()) == [8.0, 20.0]
        dashed = [line for line in axes.get_lines() if line.get_linestyle() == "--"]
        assert [line.get_xdata()[0] for line in dashed] == [15.0, 30.0]
        assert {text.get_text() for text in axes.texts} == {"v3", "v5", "back to v2", "back to v4"}
    finally:
        plt.close(figure)
