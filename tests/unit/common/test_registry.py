"""The directory model registry: versions, aliases, champion history, atomic layout."""

from __future__ import annotations

import hashlib

import pytest

from flywheel.common.errors import FailedPrecondition, InvalidArgument, NotFound
from flywheel.common.registry import CHAMPION, ModelRegistry
from flywheel.v1 import common_pb2

BINARY = common_pb2.MODEL_TASK_BINARY_CLASSIFICATION


def register(registry: ModelRegistry, payload: bytes, **kwargs) -> common_pb2.ModelVersion:
    return registry.register("churn", payload, task=BINARY, entity_type="customer",
                             feature_names=["a", "b"], **kwargs)


def test_versions_are_numbered_and_hashed(tmp_path):
    registry = ModelRegistry(tmp_path)
    first = register(registry, b"one", metrics={"accuracy": 0.8})
    second = register(registry, b"two")
    assert (first.version, second.version) == (1, 2)
    assert first.sha256 == hashlib.sha256(b"one").hexdigest()
    assert registry.artifact_path(second).read_bytes() == b"two"
    assert [v.version for v in registry.versions("churn")] == [1, 2]
    assert registry.get("churn", 1).metrics["accuracy"] == pytest.approx(0.8)
    assert list(registry.get("churn", 2).feature_names) == ["a", "b"]
    assert not list(tmp_path.glob("churn/.staging-*"))


def test_lineage_round_trips(tmp_path):
    registry = ModelRegistry(tmp_path)
    lineage = common_pb2.Lineage(
        training_data=[common_pb2.OffsetRange(topic="t", partition=1, start_offset=5, end_offset=9)],
        parent_version=3, trigger_reason="every_n_labels",
    )
    stored = register(registry, b"x", lineage=lineage)
    again = registry.get("churn", stored.version)
    assert again.lineage == lineage


def test_aliases_promote_and_roll_back(tmp_path):
    registry = ModelRegistry(tmp_path)
    for payload in (b"1", b"2", b"3"):
        register(registry, payload)
    assert registry.set_alias("churn", CHAMPION, 1) == 0
    assert registry.set_alias("churn", CHAMPION, 2) == 1
    assert registry.resolve("churn").version == 2
    assert registry.get("churn", 2).aliases == [CHAMPION]
    assert registry.rollback("churn") == (2, 1)
    assert registry.resolve("churn").version == 1
    with pytest.raises(FailedPrecondition):
        registry.rollback("churn")


def test_errors_name_what_is_wrong(tmp_path):
    registry = ModelRegistry(tmp_path)
    with pytest.raises(NotFound, match="no version 7"):
        registry.get("churn", 7)
    with pytest.raises(NotFound, match="champion"):
        registry.resolve("churn")
    with pytest.raises(InvalidArgument):
        registry.versions("../etc")
    with pytest.raises(InvalidArgument, match="feature names"):
        registry.register("churn", b"x", task=BINARY, entity_type="c", feature_names=[])


def test_staging_leftovers_of_a_cut_registration_are_removed(tmp_path):
    registry = ModelRegistry(tmp_path)
    register(registry, b"one")
    # What a process killed in the middle of register() leaves: a staging folder, unnumbered.
    leftover = tmp_path / "churn" / ".staging-2-abc123"
    leftover.mkdir()
    (leftover / "model.onnx").write_bytes(b"half")
    assert [v.version for v in registry.versions("churn")] == [1]  # never read as a version

    assert registry.remove_staging_leftovers() == 1
    assert not leftover.exists()
    assert register(registry, b"two").version == 2
