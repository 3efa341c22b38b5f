"""The synthetic worlds as histories: the nonlinear concept defeats a linear model and not a
boosted tree, each drift makes the old concept's model poor, and the table has the columns
the replay reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

from flywheel.common.spec import Dtype
from flywheel.demo.concepts import NonlinearConcept, make_concept
from flywheel.demo.scenario import FEATURE_NAMES
from flywheel.replay.history import read_history
from flywheel.replay.worlds import world_table, write_table

TRAIN, TEST = 3000, 4000


def boosted_tree() -> HistGradientBoostingClassifier:
    return HistGradientBoostingClassifier(max_iter=60, random_state=0)


def regime_rows(table, regime: int) -> tuple[np.ndarray, np.ndarray]:
    drift = np.asarray(table.column("drift"))
    keep = drift == regime
    features = np.column_stack([np.asarray(table.column(n))[keep] for n in FEATURE_NAMES])
    return features, np.asarray(table.column("label"))[keep]


@pytest.fixture(scope="module")
def nonlinear():
    return world_table("nonlinear", rows=3 * (TRAIN + TEST), drifts=2, seed=11)


def test_a_linear_model_stays_far_below_a_boosted_tree(nonlinear):
    for regime in range(3):
        features, labels = regime_rows(nonlinear, regime)
        assert 0.3 < labels.mean() < 0.7  # neither class is rare
        train, test = slice(0, TRAIN), slice(TRAIN, None)
        linear = LogisticRegression(max_iter=500).fit(features[train], labels[train])
        tree = boosted_tree().fit(features[train], labels[train])
        linear_accuracy = linear.score(features[test], labels[test])
        tree_accuracy = tree.score(features[test], labels[test])
        assert linear_accuracy < 0.75, regime
        assert tree_accuracy > 0.88, regime
        assert tree_accuracy - linear_accuracy > 0.15, regime


def test_after_a_drift_the_old_concepts_model_is_poor(nonlinear):
    before, before_labels = regime_rows(nonlinear, 0)
    after, after_labels = regime_rows(nonlinear, 1)
    tree = boosted_tree().fit(before, before_labels)
    assert tree.score(before[TRAIN:], before_labels[TRAIN:]) > 0.88
    assert tree.score(after, after_labels) < 0.65  # near chance on the new rules


def test_each_regime_draws_its_own_rules():
    concept = NonlinearConcept(seed=3)
    columns = [set(concept.rules(r)[0].tolist()) for r in range(4)]
    assert len({frozenset(c) for c in columns}) == 4
    rows = np.random.default_rng(0).standard_normal((5000, 24))
    assert np.array_equal(concept.truth(rows, 1), NonlinearConcept(seed=3).truth(rows, 1))


def test_the_linear_world_turns_by_the_angle_at_each_drift():
    concept = make_concept("linear", seed=5, angle_deg=60)
    for regime in (1, 2, 3):
        cosine = float(concept.weights(regime - 1) @ concept.weights(regime))
        assert np.degrees(np.arccos(cosine)) == pytest.approx(60, abs=1e-6)


def test_history_columns_and_drift_points_read_back(tmp_path: Path):
    table = world_table("linear", rows=900, drifts=2, seed=1)
    path = write_table(table, tmp_path / "world.csv")
    dtypes = dict.fromkeys(FEATURE_NAMES, Dtype.DOUBLE)
    dtypes.update(segment=Dtype.STRING, visits=Dtype.INT64)
    history = read_history(path, dtypes, FEATURE_NAMES, classification=True)
    assert len(history) == 900 and history.drift_rows == [300, 600]
    assert history.entity_ids[0] == "c0000000" and len(set(history.entity_ids)) == 900
    assert {type(v) for v in history.features["visits"]} == {int}
    assert set(history.features["segment"]) <= {"retail", "smb", "enterprise"}
    assert all(r is None for r in history.refusals)


def test_impossible_histories_are_refused():
    with pytest.raises(ValueError):
        world_table("linear", rows=10, drifts=10)
    with pytest.raises(ValueError, match="unknown world"):
        world_table("spiral", rows=10, drifts=1)
