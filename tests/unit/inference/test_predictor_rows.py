"""Rows read from the store: numbers as they are, a version's categorical strings as their
codes (what the model sees and the log carries), anything unusable FEATURE_MISSING."""

from __future__ import annotations

import math

from flywheel.common.encoding import UNKNOWN_CODE
from flywheel.inference.predictor import (
    ENTITY_NOT_FOUND,
    FEATURE_MISSING,
    OK,
    Predictor,
    StoredEntity,
)
from flywheel.v1 import common_pb2

NAMES = ["f00", "segment", "visits"]
SEGMENTS = ["retail", "smb", "enterprise"]


def _predictor(stored: dict[str, list]) -> Predictor:
    async def fetch(entity_type, entity_ids, feature_names):
        assert feature_names == NAMES
        return [StoredEntity(e, e in stored, stored.get(e, ())) for e in entity_ids]

    return Predictor(None, fetch, None, max_rows=100)  # type: ignore[arg-type]


def _meta(vocabularies: bool = True) -> common_pb2.ModelVersion:
    return common_pb2.ModelVersion(
        model_name="mixed", version=1, entity_type="customer", feature_names=NAMES,
        vocabularies={"segment": common_pb2.Vocabulary(values=SEGMENTS)} if vocabularies else {})


async def test_categorical_strings_become_their_codes_and_unknown_ones_zero():
    predictor = _predictor({"a": [0.5, "smb", 3.0], "b": [-1.0, "retail", 0.0],
                            "c": [2.0, "government", 1.0]})
    results, vectors = await predictor._from_store(_meta(), ["a", "b", "c", "ghost"])
    assert [r.status for r in results] == [OK, OK, OK, ENTITY_NOT_FOUND]
    assert vectors[:3] == [[0.5, 2.0, 3.0], [-1.0, 1.0, 0.0], [2.0, UNKNOWN_CODE, 1.0]]
    assert vectors[3] is None


async def test_unusable_values_of_a_categorical_version_are_named():
    predictor = _predictor({"number-as-category": [0.5, 7.0, 3.0],
                            "string-as-number": ["x", "smb", 3.0],
                            "unset": [0.5, None, 3.0],
                            "nan": [math.nan, "smb", 3.0]})
    ids = ["number-as-category", "string-as-number", "unset", "nan"]
    results, vectors = await predictor._from_store(_meta(), ids)
    assert [r.status for r in results] == [FEATURE_MISSING] * 4
    assert vectors == [None] * 4
    assert [r.detail for r in results] == [
        "missing or unusable features: ['segment']", "missing or unusable features: ['f00']",
        "missing or unusable features: ['segment']", "missing or unusable features: ['f00']"]


async def test_a_string_for_a_version_without_vocabularies_is_a_missing_feature():
    predictor = _predictor({"a": [0.5, "smb", 3.0], "b": [0.5, 1.0, math.inf],
                            "c": [0.5, 1.0, 3.0]})
    results, vectors = await predictor._from_store(_meta(vocabularies=False), ["a", "b", "c"])
    assert [r.status for r in results] == [FEATURE_MISSING, FEATURE_MISSING, OK]
    assert "segment" in results[0].detail and "visits" in results[1].detail
    assert vectors[2] == [0.5, 1.0, 3.0]
