"""The synthetic world: seeded, a concept that turns by the asked angle, noisy late labels."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flywheel.demo.scenario import N_FEATURES, Pacer, ScenarioConfig, World


def test_same_seed_same_world():
    first = World(ScenarioConfig(seed=3)).customers(50, regime=0)
    second = World(ScenarioConfig(seed=3)).customers(50, regime=0)
    assert [c.label for c in first] == [c.label for c in second]
    assert np.array_equal(first[7].features, second[7].features)
    other_seed = World(ScenarioConfig(seed=4)).customers(1, 0)[0]
    assert other_seed.features.tolist() != first[0].features.tolist()


def test_drift_turns_the_concept_by_the_angle():
    world = World(ScenarioConfig(seed=1, drift_angle_deg=80))
    cosine = float(world.concept.weights(0) @ world.concept.weights(1))
    assert math.degrees(math.acos(cosine)) == pytest.approx(80, abs=1e-6)
    rows = np.random.default_rng(0).standard_normal((20000, N_FEATURES))
    agreement = np.mean(world.truth(rows, regime=0) == world.truth(rows, regime=1))
    assert agreement == pytest.approx(1 - 80 / 180, abs=0.02)  # an old model's accuracy after


def test_labels_are_noisy_late_and_sometimes_lost():
    config = ScenarioConfig(seed=2, label_noise=0.05, label_loss=0.1, label_delay_s=(0.5, 2.5))
    world = World(config)
    customers = world.customers(20000, regime=0)
    features = np.stack([c.features for c in customers])
    labels = np.array([c.label for c in customers])
    flipped = np.mean(labels != world.truth(features, regime=0))
    assert flipped == pytest.approx(0.05, abs=0.01)
    assert np.mean([not c.label_arrives for c in customers]) == pytest.approx(0.1, abs=0.01)
    delays = [c.label_delay_s for c in customers]
    assert min(delays) >= 0.5 and max(delays) <= 2.5
    assert len({c.index for c in customers}) == len(customers)


def test_seed_set_is_labeled_by_the_concept_before_the_drift():
    world = World(ScenarioConfig(seed=5, seed_examples=4000, label_noise=0.0))
    features, labels = world.seed_set()
    assert features.shape == (4000, N_FEATURES)
    assert np.array_equal(labels, world.truth(features, regime=0))


def test_pacer_keeps_the_rate_across_uneven_ticks():
    pacer = Pacer(rate=150)
    total = sum(pacer.due(t) for t in [0.05, 0.13, 0.2, 0.41, 0.5, 0.77, 1.0])
    assert total == 150


@pytest.mark.parametrize("bad", [dict(drift_at_s=0), dict(drift_at_s=200), dict(rate=0),
                                 dict(label_loss=1.0), dict(label_noise=0.5)])
def test_config_refuses_impossible_runs(bad):
    with pytest.raises(ValueError):
        ScenarioConfig(**bad)
