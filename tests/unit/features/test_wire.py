"""The hand-assembled GetOnlineFeatures reply equals what the protobuf library builds, and
the stored read-ready copy of a row (framed.py) is that reply's element."""

from __future__ import annotations

import struct

from flywheel.features import framed, wire
from flywheel.features.keys import framed_fields
from flywheel.features.online_store import Version, supersedes
from flywheel.v1 import common_pb2, features_pb2


def _framed(values: list[common_pb2.FeatureValue | None]) -> bytes:
    return b"".join(
        wire.frame_value(v.SerializeToString()) if v is not None else wire.empty_values(1)
        for v in values
    )


def test_reply_bytes_parse_to_the_expected_message() -> None:
    long_text = "é" * 200  # a value longer than 127 bytes: two-byte length varints
    values = [
        common_pb2.FeatureValue(double_value=-1.25),
        None,
        common_pb2.FeatureValue(int64_value=-7),
        common_pb2.FeatureValue(string_value=long_text),
        common_pb2.FeatureValue(bool_value=False),
    ]
    names = ["a", "b", "c", "d", "e"]
    encoded = b"".join([
        wire.feature_names_field(names),
        wire.found_entity("ent:1/é", 1_700_000_000_123, _framed(values)),
        wire.missing_entity("nobody", wire.empty_values(5)),
        wire.found_entity("x" * 300, 5_000, _framed(values)),
    ])
    got = features_pb2.GetOnlineFeaturesResponse.FromString(encoded)

    expected = features_pb2.GetOnlineFeaturesResponse(feature_names=names)
    for entity_id, time_ms in [("ent:1/é", 1_700_000_000_123), ("x" * 300, 5_000)]:
        entity = features_pb2.EntityFeatures(
            entity_id=entity_id, status=features_pb2.FEATURE_STATUS_FOUND
        )
        entity.values.extend(v if v is not None else common_pb2.FeatureValue() for v in values)
        entity.event_time.FromMilliseconds(time_ms)
        expected.entities.append(entity)
    missing = features_pb2.EntityFeatures(
        entity_id="nobody", status=features_pb2.FEATURE_STATUS_NOT_FOUND
    )
    missing.values.extend(common_pb2.FeatureValue() for _ in range(5))
    expected.entities.insert(1, missing)
    assert got == expected
    assert got.entities[0].values[1].WhichOneof("kind") is None
    assert got.entities[0].values[4].WhichOneof("kind") == "bool_value"


def test_varint() -> None:
    for n in [0, 1, 127, 128, 300, 2**31, 2**62]:
        value = common_pb2.FeatureValue(int64_value=n).SerializeToString()
        assert value == b"\x10" + wire.varint(n)


def test_newer_wins_rule() -> None:
    old = Version(1000, 5, "a")
    assert supersedes(old, None)
    assert supersedes(Version(1001, 0, "b"), old)
    assert not supersedes(Version(999, 9, "b"), old)
    assert not supersedes(Version(1000, 5, "a"), old)  # the same event: a duplicate
    assert supersedes(Version(1000, 6, "c"), old)  # a tie on time: the rank decides
    assert not supersedes(Version(1000, 4, "d"), old)


def _event_values(values: list[common_pb2.FeatureValue | None], names: list[str]) -> dict:
    return {n: v.SerializeToString() for n, v in zip(names, values, strict=True) if v is not None}


def test_encoded_entity_is_the_reply_element_and_its_offsets_cut_it() -> None:
    names = ["a", "b", "c", "d", "e"]
    values = [
        common_pb2.FeatureValue(double_value=-1.25),
        None,
        common_pb2.FeatureValue(int64_value=-7),
        common_pb2.FeatureValue(string_value="é" * 200),
        common_pb2.FeatureValue(bool_value=True),
    ]
    layout = framed.layout_of(names)
    entity_id = "ent:1/é" + "x" * 130  # a two-byte length varint
    element, offsets = framed.encoded_entity(
        layout, entity_id, _event_values(values, names), 1_700_000_000_123
    )
    assert element == wire.found_entity(entity_id, 1_700_000_000_123, _framed(values))
    at = struct.unpack(f">{len(names) + 2}H", offsets)
    # The id field and status, each value, the event time: what the read script cuts out.
    assert element[at[0]:at[1]] == wire.entity_id_field(entity_id) + wire.STATUS_FOUND
    for i, value in enumerate(values):
        assert element[at[i + 1]:at[i + 2]] == _framed([value])
    assert element[at[-1]:] == wire.timestamp_field(1_700_000_000_123)


def test_no_encoded_entity_past_two_byte_offsets() -> None:
    layout = framed.layout_of(["s"])
    big = common_pb2.FeatureValue(string_value="x" * 70_000).SerializeToString()
    assert framed.encoded_entity(layout, "e", {"s": big}, 1_000) is None
    small = common_pb2.FeatureValue(string_value="x" * 60_000).SerializeToString()
    assert framed.encoded_entity(layout, "e", {"s": small}, 1_000) is not None


def test_read_arguments() -> None:
    layout = framed.layout_of(["a", "b", "c", "d"])
    entity, offsets = layout.entity_field.encode(), layout.offsets_field.encode()

    def args(names):
        return framed.read_arguments(layout, 12, names)

    # Every feature in the layout's order: the stored element as it is.
    assert args(["a", "b", "c", "d"]) == [entity, b"", b"12", b"4", b"4", b"0", b"a,b,c,d"]
    # Other lists: runs of consecutive positions, in request order.
    assert args(["b", "c", "a", "d"]) == [
        entity, offsets, b"12", b"4", b"4", b"3", b"2", b"3", b"1", b"1", b"4", b"4",
        b"b,c,a,d",
    ]
    assert args(["c"]) == [entity, offsets, b"12", b"4", b"1", b"1", b"3", b"3", b"c"]
    # No layout, or a name the layout lacks: field by field.
    assert framed.read_arguments(None, 12, ["b"]) == [b"", b"", b"12", b"0", b"1", b"0", b"b"]
    assert args(["a", "zz"])[:2] == [b"", b""]


def test_framed_fields_follow_the_feature_order() -> None:
    first = framed_fields(["a", "b"])
    assert first == framed_fields(("a", "b"))
    assert first[0] != framed_fields(["b", "a"])[0]
    assert first[0].startswith("@") and first[1].startswith("@") and first[0] != first[1]


def test_times_before_1970_are_encoded_as_protobuf_encodes_them() -> None:
    for time_ms in (-1, -1000, -1_500, -86_400_123):
        expected = features_pb2.EntityFeatures()
        expected.event_time.FromMilliseconds(time_ms)
        assert wire.timestamp_field(time_ms) == expected.SerializeToString(), time_ms
