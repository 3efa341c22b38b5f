"""Live gating on joined labels: shadow promotion and automatic rollback.

A shadow challenger is decided once it has `live.min_labels` joined shadow labels: promoted
when its live accuracy beats the champion's over the same period (by the gate's
min_improvement, strictly when that is 0), retired otherwise.

A new champion (promoted by a run, by the live gate or by hand) is watched until it has
`live.min_labels` joined labels of its own; if its live accuracy is then below its
predecessor's by more than `rollback_margin`, the champion is rolled back and ROLLED_BACK is
announced. The predecessor's figure is its own live accuracy as champion when it has enough
joined labels, else its holdout accuracy from the registry. The decision is taken once per
promotion; later decay is the accuracy triggers' business. On start, a champion with fewer
than min_labels joined labels and a predecessor is watched again.
"""

from __future__ import annotations

import logging

import numpy as np

from flywheel.common.errors import NotFound
from flywheel.common.registry import CHAMPION, SHADOW, ModelRegistry
from flywheel.common.spec import FlywheelSpec, ModelSpec
from flywheel.training.dataset import CHAMPION as ROLE_CHAMPION
from flywheel.training.dataset import SHADOW as ROLE_SHADOW
from flywheel.training.dataset import Dataset
from flywheel.training.promotions import Promotions

log = logging.getLogger("flywheel.training.live_gate")


class LiveGate:
    def __init__(self, spec: FlywheelSpec, dataset: Dataset, registry: ModelRegistry,
                 promotions: Promotions) -> None:
        self._spec = spec
        self._dataset = dataset
        self._registry = registry
        self._promotions = promotions
        self._watch: dict[str, tuple[int, int]] = {}
        promotions.on_promoted = self.watch

    def watch(self, name: str, version: int, previous: int) -> None:
        if previous:
            self._watch[name] = (version, previous)

    def watching(self, name: str) -> tuple[int, int] | None:
        return self._watch.get(name)

    def resume(self) -> None:
        for model in self._spec.models:
            history = self._registry.champion_history(model.name)
            if len(history) >= 2:
                correct, _ = self._dataset.live(model.name, history[-1], ROLE_CHAMPION,
                                                model.live.min_labels)
                if len(correct) < model.live.min_labels:
                    self.watch(model.name, history[-1], history[-2])

    def check(self, model: ModelSpec) -> str | None:
        """Takes at most one decision for `model`; returns what it did."""
        aliases = self._registry.aliases(model.name)
        return self._check_rollback(model, aliases) or self._check_shadow(model, aliases)

    def _window(self, model: ModelSpec) -> int:
        return max(model.live.min_labels, model.triggers.window)

    def _check_rollback(self, model: ModelSpec, aliases: dict[str, int]) -> str | None:
        watched = self._watch.get(model.name)
        if watched is None:
            return None
        version, previous = watched
        if aliases.get(CHAMPION) != version:
            del self._watch[model.name]
            return None
        correct, _ = self._dataset.live(model.name, version, ROLE_CHAMPION, self._window(model))
        if len(correct) < model.live.min_labels:
            return None
        del self._watch[model.name]
        live = float(np.mean(correct))
        baseline = self._baseline(model, previous)
        if baseline is None or live >= baseline - model.live.rollback_margin:
            log.info("%s v%d confirmed live (%.4f vs predecessor %s)", model.name, version,
                     live, baseline)
            return None
        reason = (f"live gate: v{version} live accuracy {live:.4f} over {len(correct)} labels "
                  f"is below predecessor v{previous} ({baseline:.4f}) by more than "
                  f"{model.live.rollback_margin}")
        rolled_from, rolled_to = self._promotions.rollback(model.name, reason)
        return f"rolled back v{rolled_from} -> v{rolled_to}: {reason}"

    def _baseline(self, model: ModelSpec, version: int) -> float | None:
        correct, _ = self._dataset.live(model.name, version, ROLE_CHAMPION, self._window(model))
        if len(correct) >= model.live.min_labels:
            return float(np.mean(correct))
        try:
            return self._registry.get(model.name, version).metrics.get("accuracy")
        except NotFound:
            return None

    def _check_shadow(self, model: ModelSpec, aliases: dict[str, int]) -> str | None:
        shadow, champion = aliases.get(SHADOW), aliases.get(CHAMPION)
        if not shadow:
            return None
        shadow_correct, since = self._dataset.live(model.name, shadow, ROLE_SHADOW,
                                                   self._window(model))
        if len(shadow_correct) < model.live.min_labels:
            return None
        if not champion:
            reason = "live gate: no champion; shadow promoted"
            self._promotions.promote(model.name, shadow, CHAMPION, reason)
            return reason
        champion_correct, _ = self._dataset.live(model.name, champion, ROLE_CHAMPION,
                                                 10 * self._window(model), since_ts=since)
        if len(champion_correct) < model.live.min_labels:
            return None
        s, c = float(np.mean(shadow_correct)), float(np.mean(champion_correct))
        gain = s - c
        detail = (f"shadow v{shadow} live accuracy {s:.4f} ({len(shadow_correct)} labels) vs "
                  f"champion v{champion} {c:.4f} ({len(champion_correct)} labels)")
        if gain > 0 and gain >= model.gate.min_improvement:
            self._promotions.promote(model.name, shadow, CHAMPION, f"live gate: {detail}")
            return f"promoted shadow: {detail}"
        self._promotions.retire_shadow(model.name, f"live gate: {detail}")
        return f"retired shadow: {detail}"
