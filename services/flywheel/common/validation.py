"""Validation of `flywheel.v1.Event` against the spec, shared by ingest and the feature store.

Pure logic: no I/O, no grpc. An event is checked against its entity's schema and every
problem comes back as a `Problem(field, reason, code)`: `field` names the offending part the
way a caller writes it ("entity_id", "features.f03", "vector", "event_time"), `reason` says
what is wrong, `code` is a short stable word for metrics. Validation never raises on bad
input; it only returns problems.

The per-entity work (dtype per feature, allowed NaN, vector dimension) is done once in
`EntityRules`, so the per-event cost is one pass over the event's features.

Fast paths: walking a protobuf map from python costs about a microsecond per entry. A caller
that holds the event's serialized bytes passes them in; the features part of those bytes is
then matched, in C, against the entity type's expression of certainly valid map entries
(`flywheel.common.event_wire`); anything else, valid or not, falls back to the per-entry walk,
which alone writes the problems. Ingest goes further and matches whole encoded events
(`EntityRules.encoded_event`) without decoding them at all.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from typing import Any

from flywheel.common.errors import InvalidArgument
from flywheel.common.event_wire import event_pattern, features_pattern
from flywheel.common.spec import Dtype, EntitySpec, FlywheelSpec
from flywheel.v1 import common_pb2, events_pb2

MAX_ID_LENGTH = 256
MAX_STRING_VALUE_LENGTH = 64 * 1024

# FeatureValue oneof member per dtype.
KIND_OF_DTYPE: dict[Dtype, str] = {
    Dtype.DOUBLE: "double_value",
    Dtype.INT64: "int64_value",
    Dtype.BOOL: "bool_value",
    Dtype.STRING: "string_value",
}
_DTYPE_OF_KIND = {kind: dtype for dtype, kind in KIND_OF_DTYPE.items()}

PythonValue = float | int | bool | str


@dataclass(frozen=True, slots=True)
class Problem:
    field: str
    reason: str
    # Stable, low-cardinality name of the kind of problem (a metrics label).
    code: str


class EntityRules:
    """One entity type's schema, prepared for fast checks."""

    __slots__ = (
        "_fast_features",
        "dimension",
        "encoded_event",
        "entity",
        "finite_required",
        "kinds",
        "max_future_s",
        "name",
    )

    def __init__(self, entity: EntitySpec) -> None:
        self.entity = entity
        self.name = entity.name
        self.kinds: dict[str, str] = {f.name: KIND_OF_DTYPE[f.dtype] for f in entity.features}
        # Double features that must be finite (NaN and +-Inf refused).
        self.finite_required: frozenset[str] = frozenset(
            f.name for f in entity.features if f.dtype is Dtype.DOUBLE and not f.allow_nan
        )
        self.dimension = entity.vector.dimension if entity.vector else 0
        self.max_future_s = entity.max_future_seconds
        self._fast_features = re.compile(features_pattern(entity), re.DOTALL)
        # Whole encoded events that are certainly valid but for the time against "now".
        self.encoded_event = event_pattern(entity)

    def features_certainly_valid(self, encoded_features: bytes) -> bool:
        """True only when the serialized map entries are all known features holding values
        of their kind (finite doubles where required). False means: walk the map."""
        return self._fast_features.fullmatch(encoded_features) is not None

    def problems(
        self, event: events_pb2.Event, now_s: float, encoded: bytes | None = None
    ) -> list[Problem]:
        found: list[Problem] = []
        entity_id = event.entity_id
        if not entity_id:
            found.append(Problem("entity_id", "entity_id is required", "missing_entity_id"))
        elif len(entity_id) > MAX_ID_LENGTH:
            found.append(Problem(
                "entity_id", f"entity_id is longer than {MAX_ID_LENGTH} characters",
                "entity_id_too_long",
            ))
        if len(event.event_id) > MAX_ID_LENGTH:
            found.append(Problem(
                "event_id", f"event_id is longer than {MAX_ID_LENGTH} characters",
                "event_id_too_long",
            ))
        self._check_time(event, now_s, found)
        if encoded is not None and self.features_certainly_valid(_features_part(event, encoded)):
            if event.HasField("vector"):
                self._check_vector(event.vector.values, found)
            return found
        kinds = self.kinds
        finite_required = self.finite_required
        for name, value in event.features.items():
            expected = kinds.get(name)
            if expected is None:
                found.append(Problem(
                    f"features.{name}", f"unknown feature {name!r} for entity type "
                    f"{self.name!r}", "unknown_feature",
                ))
                continue
            kind = value.WhichOneof("kind")
            if kind != expected:
                got = "no value" if kind is None else _DTYPE_OF_KIND[kind].value
                found.append(Problem(
                    f"features.{name}",
                    f"feature {name!r} is {_DTYPE_OF_KIND[expected].value}, got {got}",
                    "wrong_type",
                ))
            elif name in finite_required:
                number = value.double_value
                if number - number != 0.0:  # NaN or +-Inf, without a call per value
                    found.append(Problem(
                        f"features.{name}", f"feature {name!r} must be finite, got {number}",
                        "not_finite",
                    ))
            elif kind == "string_value" and len(value.string_value) > MAX_STRING_VALUE_LENGTH:
                found.append(Problem(
                    f"features.{name}",
                    f"feature {name!r} is longer than {MAX_STRING_VALUE_LENGTH} characters",
                    "string_too_long",
                ))
        if event.HasField("vector"):
            self._check_vector(event.vector.values, found)
        return found

    def _check_time(self, event: events_pb2.Event, now_s: float, found: list[Problem]) -> None:
        if not event.HasField("event_time"):
            found.append(Problem("event_time", "event_time is required", "missing_event_time"))
            return
        stamp = event.event_time
        if stamp.seconds <= 0 or not 0 <= stamp.nanos < 1_000_000_000:
            found.append(Problem(
                "event_time", "event_time must be a valid time after 1970-01-01",
                "invalid_event_time",
            ))
        elif stamp.seconds > now_s + self.max_future_s:
            found.append(Problem(
                "event_time",
                f"event_time is more than {self.max_future_s:g}s in the future",
                "future_event_time",
            ))

    def _check_vector(self, values: Any, found: list[Problem]) -> None:
        if not self.dimension:
            found.append(Problem(
                "vector", f"entity type {self.name!r} has no vector", "unexpected_vector"
            ))
            return
        if len(values) != self.dimension:
            found.append(Problem(
                "vector", f"vector has dimension {len(values)}, expected {self.dimension}",
                "vector_dimension",
            ))
            return
        # A sum of float32 values cannot overflow a double: it is finite iff every value is.
        if not math.isfinite(sum(values)):
            found.append(Problem("vector", "vector values must be finite", "not_finite"))


class EventValidator:
    """Validates events against every entity type of the spec."""

    def __init__(self, spec: FlywheelSpec) -> None:
        self.spec = spec
        self.rules: dict[str, EntityRules] = {e.name: EntityRules(e) for e in spec.entities}

    def problems(
        self, event: events_pb2.Event, now_s: float | None = None, encoded: bytes | None = None
    ) -> list[Problem]:
        """Every problem of the event. `encoded`: its serialized bytes, when the caller has
        them (enables the fast path; the result is the same)."""
        rules = self.rules.get(event.entity_type)
        if rules is None:
            if not event.entity_type:
                return [Problem("entity_type", "entity_type is required", "missing_entity_type")]
            return [Problem(
                "entity_type", f"unknown entity type {event.entity_type!r}", "unknown_entity_type"
            )]
        return rules.problems(event, time.time() if now_s is None else now_s, encoded)

    def first_problem(self, event: events_pb2.Event, now_s: float | None = None) -> Problem | None:
        found = self.problems(event, now_s)
        return found[0] if found else None


def _varint_size(n: int) -> int:
    size = 1
    while n >= 128:
        n >>= 7
        size += 1
    return size


def _field_size(payload_size: int) -> int:
    return 1 + _varint_size(payload_size) + payload_size


def _features_part(event: events_pb2.Event, encoded: bytes) -> bytes:
    """The bytes of the features map inside the event's encoding: fields 1-4 come before it,
    the vector (6) after it (upb writes fields in number order)."""
    start = 0
    for text in (event.event_id, event.entity_type, event.entity_id):
        if text:
            start += _field_size(len(text) if text.isascii() else len(text.encode()))
    if event.HasField("event_time"):
        start += _field_size(event.event_time.ByteSize())
    end = len(encoded)
    if event.HasField("vector"):
        end -= _field_size(event.vector.ByteSize())
    return encoded[start:end]


# -- FeatureValue <-> python ------------------------------------------------------------------


def to_python(value: common_pb2.FeatureValue) -> PythonValue | None:
    """The python value held by a FeatureValue; None when no kind is set."""
    kind = value.WhichOneof("kind")
    return None if kind is None else getattr(value, kind)


def from_python(value: PythonValue, dtype: Dtype) -> common_pb2.FeatureValue:
    """A FeatureValue of the given dtype; InvalidArgument when the value does not fit it."""
    out = common_pb2.FeatureValue()
    if dtype is Dtype.DOUBLE and isinstance(value, int | float) and not isinstance(value, bool):
        out.double_value = float(value)
    elif dtype is Dtype.INT64 and isinstance(value, int) and not isinstance(value, bool):
        if not -(2**63) <= value < 2**63:
            raise InvalidArgument(f"{value} does not fit in int64", field="value")
        out.int64_value = value
    elif dtype is Dtype.BOOL and isinstance(value, bool):
        out.bool_value = value
    elif dtype is Dtype.STRING and isinstance(value, str):
        out.string_value = value
    else:
        raise InvalidArgument(
            f"a {type(value).__name__} is not a {dtype.value} value", field="value"
        )
    return out


def event_time_ms(event: events_pb2.Event) -> int:
    """The event time in whole milliseconds since the epoch."""
    return event.event_time.seconds * 1000 + event.event_time.nanos // 1_000_000
