"""The feature store's domain: reads, writes, similarity search, schemas. No grpc, no Kafka.

Both write paths (the event consumer and WriteFeatures) validate with
`flywheel.common.validation` and write through the same newer-wins script, then mirror
the vectors Redis accepted into the FAISS index.

Every error message starts with the field it is about ("feature_names: ...").
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from flywheel.common.errors import (
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from flywheel.common.spec import EntitySpec
from flywheel.common.validation import EntityRules, EventValidator, Problem
from flywheel.features import wire
from flywheel.features.online_store import VECTOR_WRITTEN, OnlineStore, version_of
from flywheel.features.vector_index import VectorIndex
from flywheel.v1 import events_pb2

_MAX_CACHED_PLANS = 1024


def invalid(field: str, reason: str) -> InvalidArgument:
    return InvalidArgument(f"{field}: {reason}", field=field)


@dataclass(frozen=True, slots=True)
class Limits:
    max_entity_ids: int = 10_000
    max_k: int = 1_000


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """What a GetOnlineFeatures for one (entity type, feature list) needs, computed once."""

    row_prefix: str
    names_field: bytes  # the feature_names field of the reply
    script_args: list  # ARGV of the read script (OnlineStore.read_arguments)


@dataclass(frozen=True, slots=True)
class Rejection:
    index: int
    event_id: str
    problem: Problem


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    written: int
    stale: int
    rejections: list[Rejection]


class FeatureStore:
    def __init__(
        self,
        validator: EventValidator,
        store: OnlineStore,
        indexes: dict[str, VectorIndex],
        limits: Limits = Limits(),
    ) -> None:
        self.validator = validator
        self.online = store
        self.indexes = indexes
        # False until the indexes were loaded from the snapshot and Redis (see app).
        self.vectors_ready = False
        self.limits = limits
        self._plans: dict[tuple[str, tuple[str, ...]], ReadPlan] = {}

    # -- schema -----------------------------------------------------------------------------

    def rules(self, entity_type: str) -> EntityRules:
        rules = self.validator.rules.get(entity_type)
        if rules is None:
            if not entity_type:
                raise invalid("entity_type", "entity_type is required")
            raise invalid("entity_type", f"unknown entity type {entity_type!r}")
        return rules

    def schema(self, entity_type: str) -> EntitySpec:
        return self.rules(entity_type).entity

    # -- reads ------------------------------------------------------------------------------

    def plan(self, entity_type: str, feature_names: Sequence[str]) -> ReadPlan:
        key = (entity_type, tuple(feature_names))
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        rules = self.rules(entity_type)
        names = list(feature_names) or rules.entity.feature_names
        for name in names:
            if name not in rules.kinds:
                raise invalid(
                    "feature_names", f"unknown feature {name!r} for entity type {entity_type!r}"
                )
        plan = ReadPlan(
            row_prefix=self.online.keys.row_prefix(entity_type),
            names_field=wire.feature_names_field(names),
            script_args=self.online.read_arguments(entity_type, names),
        )
        if len(self._plans) >= _MAX_CACHED_PLANS:
            self._plans.clear()
        self._plans[key] = plan
        return plan

    async def get_online_features(
        self, entity_type: str, entity_ids: Sequence[str], feature_names: Sequence[str]
    ) -> bytes:
        """The encoded GetOnlineFeaturesResponse, from one Redis round trip that answers
        every entity already encoded (see `OnlineStore.read_entities`)."""
        plan = self.plan(entity_type, feature_names)
        count = len(entity_ids)
        if count == 0:
            raise invalid("entity_ids", "entity_ids is empty")
        if count > self.limits.max_entity_ids:
            raise ResourceExhausted(
                f"entity_ids: {count} ids in one request; at most {self.limits.max_entity_ids}",
                field="entity_ids",
            )
        if "" in entity_ids:
            raise invalid("entity_ids", "entity_ids holds an empty id")
        prefix = plan.row_prefix
        entities = await self.online.read_entities(
            [prefix + e for e in entity_ids], plan.script_args
        )
        return plan.names_field + entities

    # -- writes -----------------------------------------------------------------------------

    def split_valid(
        self, events: Sequence[events_pb2.Event]
    ) -> tuple[list[events_pb2.Event], list[Rejection]]:
        valid: list[events_pb2.Event] = []
        rejections: list[Rejection] = []
        problems = self.validator.problems
        for index, event in enumerate(events):
            found = problems(event)
            if found:
                rejections.append(Rejection(index, event.event_id, found[0]))
            else:
                valid.append(event)
        return valid, rejections

    async def write_features(self, rows: Sequence[events_pb2.Event]) -> WriteOutcome:
        if not rows:
            raise invalid("rows", "rows is empty")
        self._require_vectors()
        valid, rejections = self.split_valid(rows)
        results = await self.online.write_async(valid)
        self.mirror_vectors(valid, results)
        written = sum(1 for r in results if r)
        return WriteOutcome(written, len(valid) - written, rejections)

    def materialize(self, events: Sequence[events_pb2.Event]) -> list[int]:
        """The consumer's write: events must be valid (see `split_valid`)."""
        results = self.online.write(events)
        self.mirror_vectors(events, results)
        return results

    def mirror_vectors(self, events: Sequence[events_pb2.Event], results: list[int]) -> None:
        updates: dict[str, list] = defaultdict(list)
        for event, result in zip(events, results, strict=True):
            if result & VECTOR_WRITTEN:
                vector = np.asarray(event.vector.values, dtype=np.float32)
                updates[event.entity_type].append((event.entity_id, vector, version_of(event)))
        for entity_type, items in updates.items():
            self.indexes[entity_type].upsert_many(items)

    def index_vectors(self, events: Sequence[events_pb2.Event]) -> None:
        """The vectors of valid events into the indexes, newer-wins (an index follower)."""
        updates: dict[str, list] = defaultdict(list)
        for event in events:
            if event.HasField("vector") and event.entity_type in self.indexes:
                vector = np.asarray(event.vector.values, dtype=np.float32)
                updates[event.entity_type].append((event.entity_id, vector, version_of(event)))
        for entity_type, items in updates.items():
            self.indexes[entity_type].upsert_newer(items)

    def _require_vectors(self) -> None:
        if not self.vectors_ready:
            raise Unavailable("the vector index is still loading; retry shortly")

    # -- similarity -------------------------------------------------------------------------

    def search_similar(
        self, entity_type: str, vector: Sequence[float] | None, entity_id: str | None, k: int
    ) -> list[tuple[str, float]]:
        rules = self.rules(entity_type)
        self._require_vectors()
        index = self.indexes.get(entity_type)
        if index is None:
            raise invalid("entity_type", f"entity type {entity_type!r} has no vector")
        if k <= 0:
            raise invalid("k", f"k must be positive, got {k}")
        if k > self.limits.max_k:
            raise invalid("k", f"k is {k}; at most {self.limits.max_k}")
        if vector is not None:
            if len(vector) != rules.dimension:
                raise invalid(
                    "vector", f"vector has dimension {len(vector)}, expected {rules.dimension}"
                )
            query = np.asarray(vector, dtype=np.float32)
            if not np.isfinite(query).all():
                raise invalid("vector", "vector values must be finite")
        elif entity_id is not None:
            if not entity_id:
                raise invalid("entity_id", "entity_id is empty")
            query = index.vector_of(entity_id)
            if query is None:
                raise NotFound(
                    f"entity_id: no vector stored for {entity_type} {entity_id!r}",
                    field="entity_id",
                )
        else:
            raise invalid("query", "give a vector or an entity_id")
        return index.search(query, k)
