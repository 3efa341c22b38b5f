"""The feature store's documented semantics computed without Redis: the reference that
crash, replay and rebalance tests compare the real store against."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from flywheel.features.online_store import Version, pack_vector, supersedes, version_of
from flywheel.v1 import events_pb2

Rows = dict[str, tuple[Version, dict[str, bytes]]]
Vectors = dict[str, tuple[Version, bytes]]


def newest_wins(
    events: Iterable[events_pb2.Event],
    accept: Callable[[events_pb2.Event], bool] = lambda event: True,
) -> tuple[Rows, Vectors]:
    """Per entity: (version, feature bytes) of the newest accepted row, and (version, bytes) of
    the newest vector, whatever order the events came in."""
    rows: Rows = {}
    vectors: Vectors = {}
    for event in events:
        if not accept(event):
            continue
        version = version_of(event)
        held = rows.get(event.entity_id)
        if supersedes(version, held[0] if held else None):
            rows[event.entity_id] = (
                version, {name: value.SerializeToString() for name, value in event.features.items()}
            )
        if event.HasField("vector"):
            held_vector = vectors.get(event.entity_id)
            if supersedes(version, held_vector[0] if held_vector else None):
                vectors[event.entity_id] = (version, pack_vector(event.vector.values))
    return rows, vectors
