"""The training service's Prometheus metrics: what the flywheel dashboard plots of the
learning half (deploy/grafana/flywheel.json)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TRIGGERS = Counter(
    "flywheel_training_triggers_total", "Retrain triggers fired, by model and trigger.",
    ["model", "trigger"])
RUNS = Counter(
    "flywheel_training_runs_total", "Training runs finished, by model and state "
    "(succeeded, failed).", ["model", "state"])
STAGE_SECONDS = Histogram(
    "flywheel_training_stage_seconds", "Seconds per stage of a training run.",
    ["model", "stage"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
ALIAS_CHANGES = Counter(
    "flywheel_training_alias_changes_total", "Announced changes, by model and kind: registered, "
    "promoted, shadowed, rolled_back, retired.", ["model", "change"])
REFUSALS = Counter(
    "flywheel_training_refusals_total", "Versions inference refused to load (each returned its "
    "aliases to the version before it).", ["model"])
LIVE_METRIC = Gauge(
    "flywheel_training_live_metric", "A version's task metric on its own joined labels, as the "
    "live gate last judged it (accuracy for classifiers; mae or rmse for regression).",
    ["model", "version", "role", "metric"])
