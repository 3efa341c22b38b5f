"""Synthetic, valid events for an entity type of the spec (benchmarks and tests)."""

from __future__ import annotations

import random

from flywheel.common.spec import Dtype, EntitySpec
from flywheel.v1 import events_pb2

SEGMENTS = ("bronze", "silver", "gold", "platinum")


def random_event(
    entity: EntitySpec,
    entity_id: str,
    time_ms: int,
    rng: random.Random,
    *,
    event_id: str = "",
    with_vector: bool = True,
) -> events_pb2.Event:
    """An event carrying every feature of `entity` (and its vector when it has one)."""
    event = events_pb2.Event(event_id=event_id, entity_type=entity.name, entity_id=entity_id)
    event.event_time.FromMilliseconds(time_ms)
    features = event.features
    for feature in entity.features:
        value = features[feature.name]
        if feature.dtype is Dtype.DOUBLE:
            value.double_value = rng.gauss(0.0, 1.0)
        elif feature.dtype is Dtype.INT64:
            value.int64_value = rng.randrange(0, 1000)
        elif feature.dtype is Dtype.BOOL:
            value.bool_value = rng.random() < 0.5
        else:
            value.string_value = rng.choice(SEGMENTS)
    if with_vector and entity.vector is not None:
        event.vector.values.extend(rng.gauss(0.0, 1.0) for _ in range(entity.vector.dimension))
    return event
