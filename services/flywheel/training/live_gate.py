"""Live gating on joined labels: shadow promotion and automatic rollback, each judged on the
same labeled rows for both versions.

The labeled examples carry the exact features a version was given, so any other version can
be scored on those very rows offline (ONNX Runtime). That is how the two versions of a
decision are always compared on the same data:

- A new champion (promoted by a run, by the live gate or by hand) is watched until it has
  `live.min_labels` joined labels of its own since its promotion. Its live metric on those
  rows (what it served) is compared with its predecessor's on the same rows (scored
  offline); it is rolled back (ROLLED_BACK announced) only when it is worse by more than
  `rollback_margin`. So after a drift, a new version that is better on today's data is kept,
  whatever its predecessor scored before the drift. Taken once per promotion; later decay
  is the triggers' business. On start, a champion with fewer joined labels than min_labels
  and a predecessor is watched again.
- A shadow challenger is decided once it has `live.min_labels` joined shadow labels: its live
  metric on its rows against the champion scored on the same rows; promoted when it is better
  by the gate's min_improvement (strictly, when that is 0), retired otherwise.

A predecessor that cannot be scored (its artifact gone or failing its sha256, or reading
features the spec no longer has) gives no same-data baseline: the new champion is kept, and
the log says why.
"""

from __future__ import annotations

import logging
import time

from flywheel.common.errors import ArtifactRejected, NotFound
from flywheel.common.registry import CHAMPION, SHADOW, ModelRegistry
from flywheel.common.spec import FlywheelSpec, ModelSpec
from flywheel.training.dataset import CHAMPION as ROLE_CHAMPION
from flywheel.training.dataset import SHADOW as ROLE_SHADOW
from flywheel.training.dataset import Dataset, Served
from flywheel.training.live_metric import live_metric_name, live_value, worse_by
from flywheel.training.metrics import LIVE_METRIC
from flywheel.training.promotions import Promotions
from flywheel.training.scoring import open_version

log = logging.getLogger("flywheel.training.live_gate")


class LiveGate:
    def __init__(self, spec: FlywheelSpec, dataset: Dataset, registry: ModelRegistry,
                 promotions: Promotions, onnx_threads: int = 1) -> None:
        self._spec = spec
        self._dataset = dataset
        self._registry = registry
        self._promotions = promotions
        self._threads = onnx_threads
        # model -> (new champion, predecessor, promoted at (ms; 0: unknown))
        self._watch: dict[str, tuple[int, int, int]] = {}
        promotions.on_promoted = self.watch

    def watch(self, name: str, version: int, previous: int) -> None:
        if previous:
            self._watch[name] = (version, previous, int(time.time() * 1000))

    def watching(self, name: str) -> tuple[int, int] | None:
        watched = self._watch.get(name)
        return watched[:2] if watched else None

    def resume(self) -> None:
        for model in self._spec.models:
            history = self._registry.champion_history(model.name)
            if len(history) >= 2:
                served = self._dataset.served(model.name, history[-1], ROLE_CHAMPION,
                                              model.live.min_labels)
                if len(served) < model.live.min_labels:
                    self._watch[model.name] = (history[-1], history[-2], 0)

    def check(self, model: ModelSpec) -> str | None:
        """Takes at most one decision for `model`; returns what it did."""
        aliases = self._registry.aliases(model.name)
        return self._check_rollback(model, aliases) or self._check_shadow(model, aliases)

    def _window(self, model: ModelSpec) -> int:
        return max(model.live.min_labels, model.triggers.window)

    def _score_other(self, model: ModelSpec, version: int, rows: Served, name: str
                     ) -> float | None:
        """`version` scored offline on `rows` (the features another version was given)."""
        try:
            meta = self._registry.get(model.name, version)
            scorer = open_version(self._registry, meta, list(model.features), self._threads,
                                  model.task.is_classification)
        except (NotFound, ArtifactRejected, ValueError) as error:
            log.warning("%s v%d cannot be scored on the same labels: %s", model.name, version,
                        error)
            return None
        return live_value(name, rows.y, scorer.score(rows.X).predicted)

    def _check_rollback(self, model: ModelSpec, aliases: dict[str, int]) -> str | None:
        watched = self._watch.get(model.name)
        if watched is None:
            return None
        version, previous, since = watched
        if aliases.get(CHAMPION) != version:
            del self._watch[model.name]
            return None
        rows = self._dataset.served(model.name, version, ROLE_CHAMPION, self._window(model),
                                    since_ts=since)
        if len(rows) < model.live.min_labels:
            return None
        del self._watch[model.name]
        name = live_metric_name(model)
        live = live_value(name, rows.y, rows.predicted)
        LIVE_METRIC.labels(model.name, str(version), CHAMPION, name).set(live)
        baseline = self._score_other(model, previous, rows, name)
        detail = (f"v{version} live {name} {live:.4f} vs predecessor v{previous} "
                  f"{'unscorable' if baseline is None else f'{baseline:.4f}'} on the same "
                  f"{len(rows)} joined labels")
        if baseline is None or worse_by(name, live, baseline) <= model.live.rollback_margin:
            log.info("%s confirmed live: %s", model.name, detail)
            return None
        reason = f"live gate: {detail}, worse by more than {model.live.rollback_margin}"
        rolled_from, rolled_to = self._promotions.rollback(model.name, reason)
        return f"rolled back v{rolled_from} -> v{rolled_to}: {reason}"

    def _check_shadow(self, model: ModelSpec, aliases: dict[str, int]) -> str | None:
        shadow, champion = aliases.get(SHADOW), aliases.get(CHAMPION)
        if not shadow:
            return None
        rows = self._dataset.served(model.name, shadow, ROLE_SHADOW, self._window(model))
        if len(rows) < model.live.min_labels:
            return None
        if not champion:
            reason = "live gate: no champion; shadow promoted"
            self._promotions.promote(model.name, shadow, CHAMPION, reason)
            return reason
        name = live_metric_name(model)
        s = live_value(name, rows.y, rows.predicted)
        LIVE_METRIC.labels(model.name, str(shadow), SHADOW, name).set(s)
        c = self._score_other(model, champion, rows, name)
        if c is None:  # no same-row score: the champion's own labels over the same period
            own = self._dataset.served(model.name, champion, ROLE_CHAMPION,
                                       10 * self._window(model), since_ts=rows.first_ts)
            if len(own) < model.live.min_labels:
                return None
            c = live_value(name, own.y, own.predicted)
        LIVE_METRIC.labels(model.name, str(champion), CHAMPION, name).set(c)
        gain = -worse_by(name, s, c)
        detail = (f"shadow v{shadow} live {name} {s:.4f} vs champion v{champion} {c:.4f} "
                  f"on the same {len(rows)} joined labels")
        if gain > 0 and gain >= model.gate.min_improvement:
            self._promotions.promote(model.name, shadow, CHAMPION, f"live gate: {detail}")
            return f"promoted shadow: {detail}"
        self._promotions.retire_shadow(model.name, f"live gate: {detail}")
        return f"retired shadow: {detail}"
