"""Alias arithmetic (flywheel.common.aliases) and the announce-then-write order of Promotions,
with the announcement feed replaced by a list (or by a feed that is down)."""

from __future__ import annotations

import pytest

from flywheel.common import aliases as plans
from flywheel.common.aliases import CHAMPION, SHADOW, AliasState
from flywheel.common.errors import FailedPrecondition, InvalidArgument, Unavailable
from flywheel.common.registry import ModelRegistry
from flywheel.training.promotions import Promotions
from flywheel.v1 import common_pb2, events_pb2

NOTHING_REFUSED: dict[int, str] = {}


def state(champion: int = 0, shadow: int = 0, history: tuple[int, ...] = ()) -> AliasState:
    aliases = {a: v for a, v in ((CHAMPION, champion), (SHADOW, shadow)) if v}
    return AliasState(aliases, history)


# -- the pure plans ----------------------------------------------------------------------------

def test_promotion_pushes_the_history_and_clears_a_shadow_that_becomes_champion():
    plan = plans.promote("churn", state(1, shadow=2, history=(1,)), 2, CHAMPION, NOTHING_REFUSED)
    assert plan.after == state(2, history=(1, 2))
    assert plan.changes == ((CHAMPION, 2, 1), (SHADOW, 0, 2))
    assert plan.previous(CHAMPION) == 1
    again = plans.promote("churn", plan.after, 2, CHAMPION, NOTHING_REFUSED)
    assert not again.changed and again.changes == ()


def test_shadowing_leaves_the_history_alone_and_never_shadows_the_champion():
    plan = plans.promote("churn", state(1, history=(1,)), 3, SHADOW, NOTHING_REFUSED)
    assert plan.after == state(1, shadow=3, history=(1,))
    assert plan.changes == ((SHADOW, 3, 0),)
    with pytest.raises(FailedPrecondition, match="its own shadow"):
        plans.promote("churn", plan.after, 1, SHADOW, NOTHING_REFUSED)
    with pytest.raises(InvalidArgument, match="alias"):
        plans.promote("churn", plan.after, 3, "canary", NOTHING_REFUSED)


def test_a_refused_version_cannot_be_promoted_or_shadowed():
    refused = {3: "hash: sha256 mismatch"}
    for alias in (CHAMPION, SHADOW):
        with pytest.raises(FailedPrecondition, match=r"MODEL_VERSION_STATUS_REFUSED.*sha256"):
            plans.promote("churn", state(1, history=(1,)), 3, alias, refused)


def test_rollback_skips_refused_versions_and_needs_an_earlier_champion():
    plan = plans.rollback("churn", state(4, history=(1, 2, 3, 4)), {3: "graph"})
    assert plan.after.champion == 2
    assert plan.after.champion_history == (1, 2)
    assert plan.after.rolled_back == (4,)
    assert plan.changes == ((CHAMPION, 2, 4),)
    with pytest.raises(FailedPrecondition, match="no earlier champion"):
        plans.rollback("churn", state(2, history=(1, 2)), {1: "hash"})
    with pytest.raises(FailedPrecondition):
        plans.rollback("churn", state(), NOTHING_REFUSED)


def test_withdrawing_the_champion_returns_to_the_one_serving_before():
    plan = plans.withdraw(state(3, shadow=4, history=(1, 2, 3)), 3, NOTHING_REFUSED)
    assert plan.after == state(2, shadow=4, history=(1, 2))
    assert plan.changes == ((CHAMPION, 2, 3),)
    # Two refused in a row: back past both.
    plan = plans.withdraw(state(4, history=(1, 2, 3, 4)), 4, {3: "hash"})
    assert plan.after.champion == 2


def test_withdrawing_a_shadow_or_a_first_champion_points_the_alias_nowhere():
    plan = plans.withdraw(state(1, shadow=2, history=(1,)), 2, NOTHING_REFUSED)
    assert plan.after == state(1, history=(1,)) and plan.changes == ((SHADOW, 0, 2),)
    plan = plans.withdraw(state(1, history=(1,)), 1, NOTHING_REFUSED)
    assert plan.after == state() and plan.changes == ((CHAMPION, 0, 1),)


def test_withdrawing_a_version_no_alias_names_only_cleans_the_history():
    plan = plans.withdraw(state(4, history=(1, 2, 3, 4)), 2, NOTHING_REFUSED)
    assert plan.changes == ()
    assert plan.after == state(4, history=(1, 3, 4))
    assert not plans.withdraw(plan.after, 2, {2: "hash"}).changed


def test_state_round_trips_through_json():
    original = AliasState({CHAMPION: 2, SHADOW: 5}, (1, 2), (3,))
    assert AliasState.from_json(original.to_json()) == original


# -- Promotions: announce, then write ----------------------------------------------------------

class Feed:
    """The announcement feed: records what was published, or fails like a broker that is down."""

    def __init__(self) -> None:
        self.records: list[events_pb2.ModelVersionAnnounced] = []
        self.down = False

    def __call__(self, record: events_pb2.ModelVersionAnnounced) -> None:
        if self.down:
            raise Unavailable("Kafka did not acknowledge a record within 1s")
        self.records.append(record)


@pytest.fixture
def registry(tmp_path) -> ModelRegistry:
    registry = ModelRegistry(tmp_path / "registry")
    for payload in (b"1", b"2", b"3"):
        registry.register("churn", payload, task=common_pb2.MODEL_TASK_BINARY_CLASSIFICATION,
                          entity_type="customer", feature_names=["a"])
    return registry


def test_an_announcement_carries_the_aliases_as_they_will_be(registry):
    feed = Feed()
    promotions = Promotions(registry, feed)
    promotions.promote("churn", 1, CHAMPION, "first")
    promotions.promote("churn", 2, SHADOW, "challenger")
    assert [dict(r.aliases) for r in feed.records] == [{CHAMPION: 1}, {CHAMPION: 1, SHADOW: 2}]
    assert list(feed.records[1].model_version.aliases) == [SHADOW]
    assert registry.aliases("churn") == {CHAMPION: 1, SHADOW: 2}


def test_a_change_that_cannot_be_announced_changes_nothing(registry):
    feed = Feed()
    promotions = Promotions(registry, feed)
    promotions.promote("churn", 1, CHAMPION, "first")
    promotions.promote("churn", 2, CHAMPION, "second")
    before = registry.alias_state("churn")
    feed.down = True
    for change in (lambda: promotions.promote("churn", 3, CHAMPION, "by hand"),
                   lambda: promotions.promote("churn", 3, SHADOW, "by hand"),
                   lambda: promotions.rollback("churn", "by hand")):
        with pytest.raises(Unavailable, match=r"aliases not changed.*Kafka"):
            change()
        assert registry.alias_state("churn") == before
    assert promotions.unsettled == {"churn"}
    # Once Kafka answers, the registry's state is announced again: the last record is the truth.
    feed.down = False
    assert promotions.settle() == ["churn"]
    assert dict(feed.records[-1].aliases) == {CHAMPION: 2}
    assert promotions.unsettled == set()


def test_a_refused_champion_returns_to_the_previous_and_cannot_come_back(registry):
    feed = Feed()
    promotions = Promotions(registry, feed)
    promotions.promote("churn", 1, CHAMPION, "first")
    promotions.promote("churn", 2, CHAMPION, "second")
    plan = promotions.refused("churn", 2, "hash: sha256 mismatch")
    assert registry.aliases("churn") == {CHAMPION: 1}
    assert plan.changes == ((CHAMPION, 1, 2),)
    last = feed.records[-1]
    assert last.change == events_pb2.MODEL_VERSION_CHANGE_ROLLED_BACK
    assert last.model_version.version == 1 and dict(last.aliases) == {CHAMPION: 1}
    assert "inference refused v2" in last.reason and "sha256" in last.reason
    meta = registry.get("churn", 2)
    assert meta.status == common_pb2.MODEL_VERSION_STATUS_REFUSED
    assert meta.status_reason == "hash: sha256 mismatch"
    with pytest.raises(FailedPrecondition, match="MODEL_VERSION_STATUS_REFUSED"):
        promotions.promote("churn", 2, CHAMPION, "by hand")
    # A second report of the same refusal changes and announces nothing.
    announced = len(feed.records)
    assert not promotions.refused("churn", 2, "hash: sha256 mismatch").changes
    assert len(feed.records) == announced
    # And a rollback never lands on it.
    promotions.promote("churn", 3, CHAMPION, "third")
    assert promotions.rollback("churn", "by hand") == (3, 1)
