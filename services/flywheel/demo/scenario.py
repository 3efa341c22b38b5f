"""The synthetic world of the demo: customers, a hidden concept that drifts, late labels.

Every customer has 24 numeric features drawn from a standard normal, a segment and a count
of visits. Whether it churns is a hidden concept (``flywheel.demo.concepts``): a linear rule
that turns by ``drift_angle_deg`` at the drift (world ``linear``), or a scorecard of
thresholds and interactions whose rules change abruptly (world ``nonlinear``). The ground
truth comes back after a delay, a few labels are flipped (label noise) and some never come
back. Everything is drawn from one seeded generator: the same seed gives the same customers,
labels and delays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flywheel.demo.concepts import N_FEATURES, WORLDS, make_concept

MODEL = "churn"  # the spec's model and entity type (flywheel.yaml)
ENTITY_TYPE = "customer"
FEATURE_NAMES = tuple(f"f{i:02d}" for i in range(N_FEATURES))
SEGMENTS = ("retail", "smb", "enterprise")


@dataclass(frozen=True)
class ScenarioConfig:
    seed: int = 7
    duration_s: float = 150.0
    drift_at_s: float = 50.0
    rate: float = 200.0  # customers (events) per second
    label_delay_s: tuple[float, float] = (0.5, 2.5)
    label_loss: float = 0.08  # share of labels that never come back
    label_noise: float = 0.03  # share of labels that come back flipped
    drift_angle_deg: float = 80.0
    seed_examples: int = 2000
    world: str = "linear"  # the hidden concept (flywheel.demo.concepts.WORLDS)

    def __post_init__(self) -> None:
        if self.world not in WORLDS:
            raise ValueError(f"unknown world {self.world!r} (one of {', '.join(WORLDS)})")
        if not 0 < self.drift_at_s < self.duration_s:
            raise ValueError("the drift must happen inside the run: 0 < drift_at < duration")
        if self.rate <= 0:
            raise ValueError("rate must be positive")
        if not (0 <= self.label_loss < 1 and 0 <= self.label_noise < 0.5):
            raise ValueError("label_loss must be in [0, 1) and label_noise in [0, 0.5)")


@dataclass(frozen=True)
class Customer:
    """One customer as the world knows it: its features and the ground truth to come."""

    index: int
    features: np.ndarray  # shape (24,)
    segment: str
    visits: int
    regime: int  # 0 before the first drift, 1 after it, ...
    label: int  # the observed ground truth (noise included): what the application learns
    label_arrives: bool
    label_delay_s: float


class World:
    def __init__(self, config: ScenarioConfig) -> None:
        self.config = config
        self._rng = np.random.default_rng(config.seed)
        self.concept = make_concept(config.world, config.seed, config.drift_angle_deg)
        self._count = 0

    def truth(self, features: np.ndarray, regime: int) -> np.ndarray:
        """The noiseless label of each row under the concept of ``regime`` (0 before the
        first drift; a bool reads as before / after the one drift of the demo)."""
        return self.concept.truth(features, int(regime))

    def customers(self, count: int, regime: int) -> list[Customer]:
        rng, cfg = self._rng, self.config
        features = rng.standard_normal((count, N_FEATURES))
        labels = self._noisy(self.truth(features, regime))
        arrives = rng.random(count) >= cfg.label_loss
        delays = rng.uniform(*cfg.label_delay_s, size=count)
        segments = rng.integers(0, len(SEGMENTS), size=count)
        visits = rng.poisson(6, size=count)
        out = []
        for row in range(count):
            out.append(Customer(
                index=self._count, features=features[row], segment=SEGMENTS[segments[row]],
                visits=int(visits[row]), regime=int(regime), label=int(labels[row]),
                label_arrives=bool(arrives[row]), label_delay_s=float(delays[row]),
            ))
            self._count += 1
        return out

    def seed_set(self) -> tuple[np.ndarray, np.ndarray]:
        """Labeled history from before the drift, for the initial model (its own generator,
        so the stream of customers does not depend on the size of the seed set)."""
        rng = np.random.default_rng([self.config.seed, 2])
        features = rng.standard_normal((self.config.seed_examples, N_FEATURES))
        return features, self._noisy(self.truth(features, regime=0), rng)

    def _noisy(self, labels: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        rng = rng or self._rng
        flip = rng.random(labels.shape[0]) < self.config.label_noise
        return np.where(flip, 1 - labels, labels)


class Pacer:
    """How many customers are due after ``elapsed`` seconds at ``rate`` per second, keeping
    the fractions, so the long-run rate is exact whatever the tick length."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._emitted = 0

    def due(self, elapsed_s: float) -> int:
        target = int(elapsed_s * self.rate)
        count = max(0, target - self._emitted)
        self._emitted += count
        return count
