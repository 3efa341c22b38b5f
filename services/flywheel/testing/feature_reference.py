"""The feature store's documented semantics computed without Redis: the reference that
crash, replay and rebalance tests compare the real store against."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from flywheel.features.framed import FramedLayout, encoded_entity
from flywheel.features.online_store import Version, pack_vector, supersedes, version_of
from flywheel.v1 import events_pb2

Rows = dict[str, tuple[Version, dict[str, bytes]]]
Vectors = dict[str, tuple[Version, bytes]]


def newest_wins(
    events: Iterable[events_pb2.Event],
    accept: Callable[[events_pb2.Event], bool] = lambda event: True,
    layouts: Mapping[str, FramedLayout] | None = None,
) -> tuple[Rows, Vectors]:
    """Per entity: (version, fields) of the newest accepted row, and (version, bytes) of the
    newest vector, whatever order the events came in. The fields of a row: each feature's
    FeatureValue encoding and, for an entity type in `layouts`, its encoded entity and
    offsets (the store's read-ready copy)."""
    rows: Rows = {}
    vectors: Vectors = {}
    for event in events:
        if not accept(event):
            continue
        version = version_of(event)
        held = rows.get(event.entity_id)
        if supersedes(version, held[0] if held else None):
            fields = {name: value.SerializeToString() for name, value in event.features.items()}
            layout = (layouts or {}).get(event.entity_type)
            framed = layout and encoded_entity(layout, event.entity_id, fields, version.time_ms)
            if layout is not None and framed:
                fields[layout.entity_field], fields[layout.offsets_field] = framed
            rows[event.entity_id] = (version, fields)
        if event.HasField("vector"):
            held_vector = vectors.get(event.entity_id)
            if supersedes(version, held_vector[0] if held_vector else None):
                vectors[event.entity_id] = (version, pack_vector(event.vector.values))
    return rows, vectors
