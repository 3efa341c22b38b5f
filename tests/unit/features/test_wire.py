"""The hand-assembled GetOnlineFeatures reply equals what the protobuf library builds."""

from __future__ import annotations

from flywheel.features import wire
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
