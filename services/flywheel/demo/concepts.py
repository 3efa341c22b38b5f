"""The hidden concepts of the synthetic worlds: which customers churn, regime after regime.

A concept labels a matrix of the 24 numeric features under one regime (0 before the first
drift, 1 after it, and so on); a drift is a change of regime.

``linear``: ``w . x > 0``, the rule turning by ``angle_deg`` at each drift (to
``cos a * w + sin a * u``, ``u`` orthogonal to ``w``), so a model of the old rule is right on
about ``1 - a/180`` of the new customers, and a linear model learns the new one.

``nonlinear``: a scorecard of thresholds and interactions, as credit rules are written: an
exclusive-or of two thresholds, a band on a third feature gated by a fourth, a sum of two
more past a cut. Each regime draws its own six features and thresholds, so a drift is
abrupt: a model of the old rules is no better than chance on the new ones. A logistic
regression stays near three in four on any regime (it cannot express the exclusive-or); a
boosted tree fitted on a few thousand rows of the regime is right on nearly all.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

N_FEATURES = 24
WORLDS = ("linear", "nonlinear")


class Concept(Protocol):
    def truth(self, features: np.ndarray, regime: int) -> np.ndarray:
        """The noiseless 0/1 label of each row of ``features`` (shape (n, 24)) under ``regime``."""
        ...


class LinearConcept:
    def __init__(self, seed: int, angle_deg: float) -> None:
        self._seed = seed
        self._angle = math.radians(angle_deg)
        generator = np.random.default_rng([seed, 1])
        first = _unit(generator.standard_normal(N_FEATURES))
        self._weights = [first]
        self._first_turn = generator.standard_normal(N_FEATURES)

    def weights(self, regime: int) -> np.ndarray:
        while len(self._weights) <= regime:
            k = len(self._weights)
            previous = self._weights[-1]
            other = (self._first_turn if k == 1
                     else np.random.default_rng([self._seed, 1, k]).standard_normal(N_FEATURES))
            other = _unit(other - (other @ previous) * previous)
            self._weights.append(math.cos(self._angle) * previous + math.sin(self._angle) * other)
        return self._weights[regime]

    def truth(self, features: np.ndarray, regime: int) -> np.ndarray:
        return (features @ self.weights(int(regime)) > 0).astype(np.int64)


class NonlinearConcept:
    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._rules: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def rules(self, regime: int) -> tuple[np.ndarray, np.ndarray]:
        """(six feature indices, six thresholds) of the regime's scorecard."""
        if regime not in self._rules:
            generator = np.random.default_rng([self._seed, 10, regime])
            self._rules[regime] = (generator.permutation(N_FEATURES)[:6],
                                   generator.uniform(-0.4, 0.4, size=6))
        return self._rules[regime]

    def truth(self, features: np.ndarray, regime: int) -> np.ndarray:
        columns, cut = self.rules(int(regime))
        a, b, c, d, e, f = (features[:, i] for i in columns)
        either = (a > cut[0]) != (b > cut[1])
        band = (np.abs(c - cut[2]) < 0.8) & (d > cut[3])
        # Either rule alone flags the customer; both together cancel (a second interaction).
        score = either * 1.0 + band * 1.0 - 0.9 * (either & band) + 0.8 * (e + f > 1.0 + cut[4])
        return (score >= 1.0).astype(np.int64)


def make_concept(world: str, seed: int, angle_deg: float = 80.0) -> Concept:
    if world == "linear":
        return LinearConcept(seed, angle_deg)
    if world == "nonlinear":
        return NonlinearConcept(seed)
    raise ValueError(f"unknown world {world!r} (one of {', '.join(WORLDS)})")


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)
