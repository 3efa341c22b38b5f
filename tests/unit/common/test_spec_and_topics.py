"""The spec file's validation and the topic declarations."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from flywheel.common.errors import DecodeError, InvalidArgument, NotFound
from flywheel.common.kafka.topics import Topics
from flywheel.common.spec import FlywheelSpec, load_spec
from flywheel.v1 import events_pb2

ROOT = Path(__file__).resolve().parents[3]


def test_the_shipped_spec_loads():
    spec = load_spec(ROOT / "flywheel.yaml")
    churn = spec.model("churn")
    assert spec.entity(churn.entity_type).feature("f00").dtype.value == "double"
    with pytest.raises(InvalidArgument, match="unknown feature 'nope'"):
        spec.entity("customer").feature("nope")
    with pytest.raises(InvalidArgument, match="entity_type"):
        spec.entity("")
    with pytest.raises(NotFound):
        spec.model("missing")


def test_a_model_must_read_features_its_entity_has():
    with pytest.raises(ValidationError, match="unknown features"):
        FlywheelSpec.model_validate({
            "entities": [{"name": "e", "features": [{"name": "a"}]}],
            "models": [{"name": "m", "entity_type": "e", "features": ["a", "b"]}],
        })


def test_duplicate_feature_names_are_refused():
    with pytest.raises(ValidationError, match="unique"):
        FlywheelSpec.model_validate(
            {"entities": [{"name": "e", "features": [{"name": "a"}, {"name": "a"}]}]}
        )


def test_topics_are_namespaced_and_join_topics_co_partitioned():
    plain, scoped = Topics(), Topics("t1")
    assert plain.events.name == "flywheel.events.v1"
    assert scoped.events.name == "t1.flywheel.events.v1"
    assert scoped.events.dlq.name == "t1.flywheel.events.v1.dlq"
    assert plain.predictions.partitions == plain.feedback.partitions
    assert plain.model_versions.config["cleanup.policy"] == "compact"
    assert len({t.name for t in scoped.all()}) == len(scoped.all())


def test_decode_refuses_bytes_of_another_type():
    topic = Topics().events
    good = topic.encode(events_pb2.Event(entity_id="c1"))
    assert topic.decode(good).entity_id == "c1"
    with pytest.raises(DecodeError, match=r"not a flywheel\.v1\.Event"):
        topic.decode(b"\xff\xff\xff")
    with pytest.raises(DecodeError, match="header says"):
        topic.decode(good, "flywheel.v1.FeedbackRecorded")
    with pytest.raises(TypeError):
        topic.encode(events_pb2.FeedbackRecorded())
