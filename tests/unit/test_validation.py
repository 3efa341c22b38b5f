"""Event validation against the spec: one (field, reason) per problem, never an exception."""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flywheel.bench.workload import random_event
from flywheel.common.errors import InvalidArgument
from flywheel.common.spec import Dtype, load_spec
from flywheel.common.validation import EventValidator, event_time_ms, from_python, to_python
from flywheel.v1 import common_pb2, events_pb2

SPEC = load_spec(Path(__file__).resolve().parents[2] / "flywheel.yaml")
CUSTOMER = SPEC.entity("customer")
VALIDATOR = EventValidator(SPEC)
NOW = 1_800_000_000.0


def good_event(**changes) -> events_pb2.Event:
    event = random_event(CUSTOMER, "c1", int(NOW * 1000) - 1000, random.Random(0), event_id="e1")
    for name, value in changes.items():
        setattr(event, name, value)
    return event


def fields(event: events_pb2.Event) -> list[str]:
    return [p.field for p in VALIDATOR.problems(event, NOW)]


def test_a_good_event_has_no_problem() -> None:
    assert VALIDATOR.problems(good_event(), NOW) == []
    assert VALIDATOR.first_problem(good_event(), NOW) is None


def test_partial_events_and_no_vector_are_fine() -> None:
    event = good_event()
    del event.features["f05"]
    event.ClearField("vector")
    assert fields(event) == []


def _mutate(change):
    event = good_event()
    change(event)
    return event


@pytest.mark.parametrize(
    ("change", "field", "code"),
    [
        (lambda e: setattr(e, "entity_type", ""), "entity_type", "missing_entity_type"),
        (lambda e: setattr(e, "entity_type", "robot"), "entity_type", "unknown_entity_type"),
        (lambda e: setattr(e, "entity_id", ""), "entity_id", "missing_entity_id"),
        (lambda e: setattr(e, "entity_id", "x" * 300), "entity_id", "entity_id_too_long"),
        (lambda e: setattr(e, "event_id", "x" * 300), "event_id", "event_id_too_long"),
        (lambda e: e.features["nope"].SetInParent(), "features.nope", "unknown_feature"),
        (lambda e: setattr(e.features["f03"], "string_value", "x"), "features.f03", "wrong_type"),
        (lambda e: setattr(e.features["visits"], "double_value", 2.0), "features.visits",
         "wrong_type"),
        (lambda e: setattr(e.features["segment"], "int64_value", 2), "features.segment",
         "wrong_type"),
        (lambda e: e.features["f07"].Clear(), "features.f07", "wrong_type"),
        (lambda e: setattr(e.features["f01"], "double_value", math.nan), "features.f01",
         "not_finite"),
        (lambda e: setattr(e.features["f01"], "double_value", math.inf), "features.f01",
         "not_finite"),
        (lambda e: e.ClearField("event_time"), "event_time", "missing_event_time"),
        (lambda e: e.event_time.FromSeconds(int(NOW) + 301), "event_time", "future_event_time"),
        (lambda e: setattr(e.event_time, "nanos", -5), "event_time", "invalid_event_time"),
        (lambda e: e.vector.values.append(1.0), "vector", "vector_dimension"),
        (lambda e: e.vector.values.__setitem__(3, math.nan), "vector", "not_finite"),
        (lambda e: e.vector.values.__setitem__(3, -math.inf), "vector", "not_finite"),
    ],
)
def test_each_problem_names_its_field(change, field, code) -> None:
    problems = VALIDATOR.problems(_mutate(change), NOW)
    assert [(p.field, p.code) for p in problems] == [(field, code)]
    assert problems[0].reason


def test_a_little_in_the_future_is_allowed() -> None:
    event = good_event()
    event.event_time.FromSeconds(int(NOW) + 299)
    assert fields(event) == []


def test_nan_allowed_where_the_spec_says_so() -> None:
    spec = SPEC.model_copy(update={"entities": (CUSTOMER.model_copy(update={
        "features": (*CUSTOMER.features[:1], CUSTOMER.features[1].model_copy(
            update={"allow_nan": True}), *CUSTOMER.features[2:]),
        "vector": None,
    }),)})
    event = good_event()
    event.ClearField("vector")
    event.features["f01"].double_value = math.nan
    assert EventValidator(spec).problems(event, NOW) == []
    event.vector.values.extend([0.0] * 8)
    assert [p.code for p in EventValidator(spec).problems(event, NOW)] == ["unexpected_vector"]


def test_several_problems_are_all_reported() -> None:
    event = good_event(entity_id="")
    event.features["f02"].string_value = "x"
    assert fields(event) == ["entity_id", "features.f02"]


def test_conversions() -> None:
    for value, dtype in [(1.5, Dtype.DOUBLE), (3, Dtype.INT64), (True, Dtype.BOOL),
                         ("gold", Dtype.STRING)]:
        assert to_python(from_python(value, dtype)) == value
    assert from_python(2, Dtype.DOUBLE).double_value == 2.0
    assert to_python(common_pb2.FeatureValue()) is None
    for value, dtype in [(True, Dtype.DOUBLE), ("1", Dtype.INT64), (1, Dtype.BOOL),
                         (2**64, Dtype.INT64), (1.0, Dtype.STRING)]:
        with pytest.raises(InvalidArgument):
            from_python(value, dtype)


def test_event_time_ms() -> None:
    event = good_event()
    event.event_time.seconds, event.event_time.nanos = 12, 345_678_901
    assert event_time_ms(event) == 12_345


_feature_values = st.one_of(
    st.builds(lambda v: common_pb2.FeatureValue(double_value=v), st.floats()),
    st.builds(lambda v: common_pb2.FeatureValue(int64_value=v),
              st.integers(-(2**63), 2**63 - 1)),
    st.builds(lambda v: common_pb2.FeatureValue(bool_value=v), st.booleans()),
    st.builds(lambda v: common_pb2.FeatureValue(string_value=v), st.text(max_size=20)),
    st.just(common_pb2.FeatureValue()),
)


@st.composite
def random_events(draw) -> events_pb2.Event:
    event = events_pb2.Event(
        event_id=draw(st.text(max_size=300)),
        entity_type=draw(st.sampled_from(["customer", "", "robot"])),
        entity_id=draw(st.text(max_size=300)),
    )
    names = st.one_of(st.sampled_from(CUSTOMER.feature_names), st.text(max_size=10))
    for name, value in draw(st.dictionaries(names, _feature_values, max_size=30)).items():
        event.features[name].CopyFrom(value)
    if draw(st.booleans()):
        event.event_time.seconds = draw(st.integers(-(2**40), 2**40))
        event.event_time.nanos = draw(st.integers(-(2**31), 2**31 - 1))
    if draw(st.booleans()):
        event.vector.values.extend(draw(st.lists(
            st.floats(width=32), max_size=12)))
    return event


@settings(max_examples=300, deadline=None)
@given(random_events())
def test_random_events_never_raise_only_reject(event: events_pb2.Event) -> None:
    problems = VALIDATOR.problems(event, time.time())
    for problem in problems:
        assert problem.field and problem.reason and problem.code
        assert problem.field in {"entity_type", "entity_id", "event_id", "event_time", "vector"} \
            or problem.field.startswith("features.")


@settings(max_examples=300, deadline=None)
@given(random_events())
def test_the_fast_path_agrees_with_the_walk(event: events_pb2.Event) -> None:
    now = time.time()
    assert VALIDATOR.problems(event, now, event.SerializeToString()) == \
        VALIDATOR.problems(event, now)


def test_the_fast_path_accepts_good_events_and_refuses_bad_ones() -> None:
    rules = VALIDATOR.rules["customer"]
    from flywheel.common.validation import _features_part

    event = good_event(entity_id="é-unicode")
    assert rules.features_certainly_valid(_features_part(event, event.SerializeToString()))
    for change in (
        lambda e: setattr(e.features["f01"], "double_value", math.nan),
        lambda e: setattr(e.features["f01"], "double_value", -math.inf),
        lambda e: setattr(e.features["visits"], "double_value", 1.0),
        lambda e: e.features["other"].SetInParent(),
        lambda e: setattr(e.features["segment"], "string_value", "x" * 200),
    ):
        bad = good_event()
        change(bad)
        assert not rules.features_certainly_valid(_features_part(bad, bad.SerializeToString()))
