"""Hand-assembled protobuf encoding of the GetOnlineFeatures reply: the python reference.

The reply goes to the caller as bytes, never as a message object. Each row stores its
`entities` element encoded here at write time (`flywheel.features.framed`), and the read
script in Redis serves it, or builds the same bytes itself for rows stored field by field.
Field numbers below are those of protos/flywheel/v1/features.proto;
`tests/unit/features/test_wire.py` checks these bytes against the protobuf library, and
`tests/integration/features/test_read_script.py` the script's.
"""

from __future__ import annotations

from flywheel.common.event_wire import varint
from flywheel.v1 import features_pb2

# Tags: (field number << 3) | wire type.
_RESPONSE_FEATURE_NAMES = b"\x0a"  # GetOnlineFeaturesResponse.feature_names = 1, bytes
ENTITIES_TAG = b"\x12"  # GetOnlineFeaturesResponse.entities = 2, bytes
_ENTITY_ID = b"\x0a"  # EntityFeatures.entity_id = 1, bytes
STATUS_FOUND = b"\x10" + bytes((features_pb2.FEATURE_STATUS_FOUND,))  # status = 2, varint
_STATUS_NOT_FOUND = b"\x10" + bytes((features_pb2.FEATURE_STATUS_NOT_FOUND,))
VALUES_TAG = b"\x1a"  # EntityFeatures.values = 3, bytes
_EMPTY_VALUE = VALUES_TAG + b"\x00"  # an empty FeatureValue (unset)
_EVENT_TIME = b"\x22"  # EntityFeatures.event_time = 4, bytes
_SECONDS = b"\x08"  # Timestamp.seconds = 1, varint
_NANOS = b"\x10"  # Timestamp.nanos = 2, varint

def length_delimited(tag: bytes, payload: bytes) -> bytes:
    return tag + varint(len(payload)) + payload


def feature_names_field(names: list[str]) -> bytes:
    return b"".join(length_delimited(_RESPONSE_FEATURE_NAMES, n.encode()) for n in names)


def empty_values(count: int) -> bytes:
    return _EMPTY_VALUE * count


def timestamp_field(time_ms: int) -> bytes:
    seconds, millis = divmod(time_ms, 1000)
    body = _SECONDS + varint(seconds)
    if millis:
        body += _NANOS + varint(millis * 1_000_000)
    return length_delimited(_EVENT_TIME, body)


def entity_id_field(entity_id: str) -> bytes:
    return length_delimited(_ENTITY_ID, entity_id.encode())


def found_entity(entity_id: str, time_ms: int, framed_values: bytes) -> bytes:
    """One `entities` element: FOUND, its framed values, its event time."""
    body = entity_id_field(entity_id) + STATUS_FOUND + framed_values + timestamp_field(time_ms)
    return ENTITIES_TAG + varint(len(body)) + body


def missing_entity(entity_id: str, no_values: bytes) -> bytes:
    """One `entities` element: NOT_FOUND, one unset value per requested feature."""
    body = entity_id_field(entity_id) + _STATUS_NOT_FOUND + no_values
    return ENTITIES_TAG + varint(len(body)) + body


def frame_value(encoded_feature_value: bytes) -> bytes:
    """A stored FeatureValue encoding framed as one `values` element (what the Lua does)."""
    return length_delimited(VALUES_TAG, encoded_feature_value)
