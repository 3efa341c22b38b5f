"""Events screened as bytes: the wire expression is sound (whatever it accepts decodes to an
event the field-by-field walk accepts), ingest's screen agrees with the walk event by event,
and request framing is split as a decoder would."""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

import pytest
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st

from flywheel.bench.workload import random_event
from flywheel.common.errors import InvalidArgument
from flywheel.common.event_wire import (
    seconds_ceiling,
    seconds_within,
    split_repeated,
    varint,
    varints_below,
)
from flywheel.common.spec import load_spec
from flywheel.common.validation import EventValidator
from flywheel.ingest.core import Ingestor, Outcome
from flywheel.v1 import common_pb2, events_pb2, ingest_pb2

SPEC = load_spec(Path(__file__).resolve().parents[2] / "flywheel.yaml")
CUSTOMER = SPEC.entity("customer")
VALIDATOR = EventValidator(SPEC)
RULES = VALIDATOR.rules["customer"]
# Fixed, so that hypothesis draws the same way every time.
EVENT_TIME_MS = int(time.time() * 1000) - 60_000


def good(seed: int = 0, **changes) -> events_pb2.Event:
    event = random_event(CUSTOMER, f"c{seed}", EVENT_TIME_MS - seed, random.Random(seed))
    for name, value in changes.items():
        setattr(event, name, value)
    return event


def test_varints_below_a_bound_are_exactly_those_values() -> None:
    import re

    for bound in (2, 127, 128, 129, 300, 2**14 + 1, 123_456_789, 1_000_000_000):
        pattern = re.compile(b"|".join(varints_below(bound).values()), re.DOTALL)
        values = list(range(300)) + [bound - 1, bound, bound + 1] + [
            random.Random(bound).randrange(2**36) for _ in range(2000)
        ]
        for value in values:
            assert (pattern.fullmatch(varint(value)) is not None) == (1 <= value < bound)


def test_seconds_compare_in_numeric_order() -> None:
    now = int(time.time())
    ceiling = seconds_ceiling(now + 300)
    for seconds, within in ((now, True), (now + 300, True), (now + 301, False), (2**28, True)):
        assert seconds_within(varint(seconds), ceiling) is within


def test_good_events_match_whole() -> None:
    for seed in range(50):
        event = good(seed, event_id="" if seed % 2 else f"id-{seed}")
        assert RULES.encoded_event.fullmatch(event.SerializeToString()), seed


_values = st.one_of(
    st.builds(lambda v: common_pb2.FeatureValue(double_value=v), st.floats()),
    st.builds(lambda v: common_pb2.FeatureValue(int64_value=v), st.integers(-(2**63), 2**63 - 1)),
    st.builds(lambda v: common_pb2.FeatureValue(bool_value=v), st.booleans()),
    st.builds(lambda v: common_pb2.FeatureValue(string_value=v), st.text(max_size=140)),
    st.just(common_pb2.FeatureValue()),
)


@st.composite
def events(draw) -> events_pb2.Event:
    event = good(draw(st.integers(0, 1000)))
    if draw(st.booleans()):
        event.event_id = draw(st.text(max_size=300))
    if draw(st.booleans()):
        event.entity_id = draw(st.text(max_size=300))
    if draw(st.booleans()):
        event.entity_type = draw(st.sampled_from(["", "robot", "customer"]))
    names = st.one_of(st.sampled_from(CUSTOMER.feature_names), st.text(max_size=10))
    for name, value in draw(st.dictionaries(names, _values, max_size=4)).items():
        event.features[name].CopyFrom(value)
    if draw(st.booleans()):
        event.event_time.seconds = draw(st.integers(-(2**40), 2**40))
        event.event_time.nanos = draw(st.integers(-(2**31), 2**31 - 1))
    if draw(st.booleans()):
        event.ClearField("vector")
        event.vector.values.extend(draw(st.lists(st.floats(width=32), max_size=10)))
    return event


@st.composite
def mangled(draw) -> bytes:
    """An event's encoding with a few bytes changed, inserted or removed."""
    data = bytearray(draw(events()).SerializeToString())
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["set", "insert", "delete"]))
        byte = draw(st.integers(0, 255))
        if action == "set" and at < len(data):
            data[at] = byte
        elif action == "insert":
            data.insert(at, byte)
        elif at < len(data):
            del data[at]
    return bytes(data)


@settings(max_examples=1500, deadline=None)
@given(mangled())
def test_whatever_the_expression_accepts_decodes_to_a_valid_event(data: bytes) -> None:
    now = time.time()
    match = RULES.encoded_event.fullmatch(data)
    if match is None or not seconds_within(match["seconds"], seconds_ceiling(now + 300)):
        return
    event = events_pb2.Event.FromString(data)  # no DecodeError
    assert VALIDATOR.problems(event, now) == []
    assert event.SerializeToString() == data or events_pb2.Event.FromString(
        event.SerializeToString()) == event
    assert match["key"][1:] == event.entity_id.encode()


def screen(messages: list[bytes], keep_ids: bool = True):
    ingestor = Ingestor(VALIDATOR, None, None)  # type: ignore[arg-type]
    outcome, records, seen = Outcome(), [], 0
    for message in messages:
        good_records, count = ingestor._screen(message, seen, outcome, keep_ids)
        records += good_records
        seen += count
    return outcome, records


@settings(max_examples=400, deadline=None)
@given(st.lists(events(), min_size=1, max_size=6))
def test_the_screen_agrees_with_the_walk_event_by_event(batch: list[events_pb2.Event]) -> None:
    outcome, records = screen([ingest_pb2.IngestRequest(events=batch).SerializeToString()])
    now = time.time()
    expected = [(i, e.event_id, VALIDATOR.problems(e, now)) for i, e in enumerate(batch)]
    rejected = [(i, event_id) for i, event_id, problems in expected if problems]
    assert [(r.index, r.event_id) for r in outcome.rejections] == rejected
    for rejection in outcome.rejections:
        # One of the event's problems (which one comes first follows map order).
        assert rejection.problem in expected[rejection.index][2]
    accepted = [batch[i] for i, _, problems in expected if not problems]
    assert len(records) == len(accepted) == len(outcome.accepted_event_ids)
    for (key, value), sent, event_id in zip(records, accepted, outcome.accepted_event_ids):
        published = events_pb2.Event.FromString(value)
        assert key == sent.entity_id.encode()
        assert published.event_id == event_id == (sent.event_id or event_id)
        if not sent.event_id:
            assert len(event_id) == 32 and int(event_id, 16) >= 0
        published.event_id = sent.event_id
        assert published == sent


def test_undecodable_events_are_rejected_by_index_and_the_rest_published() -> None:
    broken = bytearray(good(7).SerializeToString())
    broken[broken.index(b"c7") + 1] = 0xFF  # entity_id no longer UTF-8
    message = b"".join(
        b"\x0a" + varint(len(data)) + data
        for data in (good(1).SerializeToString(), bytes(broken), good(2).SerializeToString())
    )
    with pytest.raises(DecodeError):
        events_pb2.Event.FromString(bytes(broken))
    first = ingest_pb2.IngestStreamRequest(events=[good(0)]).SerializeToString()
    outcome, records = screen([first, message])
    assert [(r.index, r.event_id, r.problem.field) for r in outcome.rejections] == [(2, "", "event")]
    assert [key for key, _ in records] == [b"c0", b"c1", b"c2"]


def test_late_and_bad_events_fall_to_the_walk_with_their_field() -> None:
    future = good(3, event_id="f")
    future.event_time.FromSeconds(int(time.time()) + 86_400)
    nan = good(4, event_id="n")
    nan.features["f05"].double_value = math.nan
    outcome, records = screen([ingest_pb2.IngestRequest(events=[good(5), future, nan])
                               .SerializeToString()])
    assert [(r.index, r.event_id, r.problem.field) for r in outcome.rejections] == [
        (1, "f", "event_time"), (2, "n", "features.f05")
    ]
    assert len(records) == 1


def test_request_framing() -> None:
    batch = [good(i) for i in range(3)]
    message = ingest_pb2.IngestStreamRequest(events=batch).SerializeToString()
    spans = split_repeated(message)
    assert [events_pb2.Event.FromString(message[s:e]) for s, e in spans] == batch
    # Unknown fields are skipped as a decoder would; broken framing is an error.
    assert len(split_repeated(b"\x10\x05" + message + b"\x1d\x00\x00\x00\x00")) == 3
    assert split_repeated(b"") == []
    for broken in (message[:-1], b"\x0a", b"\x0a\x05abc", b"\x0b\x00", b"\x0a\xff"):
        with pytest.raises(ValueError):
            split_repeated(broken)
    with pytest.raises(InvalidArgument):
        screen([message[:-1]])
