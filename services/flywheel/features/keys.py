"""Redis key encoding of the feature store: the one module that knows the key layout.

Every key starts with `CommonSettings.redis_key_prefix` (`<namespace>:` or nothing):

    <prefix>fw:row:<entity_type>:<entity_id>   hash: the entity's newest feature row
    <prefix>fw:vec:<entity_type>:<entity_id>   hash: the entity's newest vector

Entity types match `[A-Za-z_][A-Za-z0-9_.-]*` (no ':'), so the entity id is everything after
the third ':' and may itself hold ':'.

Fields of a row hash: ROW_TIME (event time, ms), ROW_RANK (tie-break rank of the event id),
ROW_EVENT_ID, one field per feature holding the protobuf encoding of its FeatureValue, and
the read-ready copy of the same row (`framed_fields`: the encoded entity and its offsets, see
`flywheel.features.framed`), whose field names carry a digest of the spec's feature order.
The bookkeeping fields start with '@', which no feature name can (names match
`[A-Za-z_][A-Za-z0-9_]*`). Fields of a vector hash: the same three, plus VECTOR_VALUES
(little-endian float32).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

ROW_TIME = "@t"
ROW_RANK = "@r"
ROW_EVENT_ID = "@id"
VECTOR_VALUES = "@v"
ENCODED_ENTITY = "@e:"
ENCODED_OFFSETS = "@o:"


def framed_fields(feature_names: Sequence[str]) -> tuple[str, str]:
    """The fields of the encoded entity and of its offsets for this feature order: a row
    written under another order (the spec changed) has other fields, so a reader never takes
    one order for the other."""
    digest = hashlib.blake2b(",".join(feature_names).encode(), digest_size=8).hexdigest()
    return ENCODED_ENTITY + digest, ENCODED_OFFSETS + digest


class KeySpace:
    """Key builders for one namespace."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def row_prefix(self, entity_type: str) -> str:
        return f"{self.prefix}fw:row:{entity_type}:"

    def vector_prefix(self, entity_type: str) -> str:
        return f"{self.prefix}fw:vec:{entity_type}:"

    def row(self, entity_type: str, entity_id: str) -> str:
        return self.row_prefix(entity_type) + entity_id

    def vector(self, entity_type: str, entity_id: str) -> str:
        return self.vector_prefix(entity_type) + entity_id

    def vector_pattern(self, entity_type: str) -> str:
        """A SCAN MATCH pattern for every vector key of the entity type."""
        return _glob_escape(self.vector_prefix(entity_type)) + "*"

    def namespace_pattern(self) -> str:
        """A SCAN MATCH pattern for every key of the namespace (meaningful only with a prefix)."""
        return _glob_escape(self.prefix) + "*"

    def entity_id_of_vector_key(self, entity_type: str, key: str) -> str:
        return key[len(self.vector_prefix(entity_type)):]


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
