"""Versions loaded on demand for the requests that name them (pinned versions).

Champion and shadow follow the announcements; any other registered version is loaded the
first time a request names it, kept while requests keep using it, and the least recently
used is evicted once more than `capacity` are resident (all models together). Concurrent
requests for the same cold version share one load. A version refused at load is remembered
(its artifact never changes), so later requests get the same answer without loading again.
An evicted version's session stays alive until the requests holding it have answered.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from prometheus_client import Counter, Gauge

from flywheel.common.errors import FailedPrecondition, FlywheelError, NotFound

PINNED_LOADS = Counter(
    "flywheel_inference_pinned_loads_total",
    "Versions loaded on demand for a request that named them, by outcome (loaded, refused, "
    "not_found, failed).",
    ["model", "outcome"],
)
PINNED_RESIDENT = Gauge(
    "flywheel_inference_pinned_versions",
    "Versions loaded on demand and resident now (champion and shadow not counted).",
    ["model"],
)
PINNED_EVICTIONS = Counter(
    "flywheel_inference_pinned_evictions_total",
    "Pinned versions evicted, least recently used first, to stay within max_pinned_versions.",
    ["model"],
)

V = TypeVar("V")
Key = tuple[str, int]
# (model name, version) -> the loaded version; raises NotFound, FailedPrecondition (refused)
# or any other FlywheelError.
LoadVersion = Callable[[str, int], Awaitable[V]]

_REMEMBERED_REFUSALS = 256


class PinnedVersions(Generic[V]):
    def __init__(self, capacity: int, load: LoadVersion) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._load = load
        self._resident: OrderedDict[Key, V] = OrderedDict()
        self._loading: dict[Key, asyncio.Future[V]] = {}
        self._refused: OrderedDict[Key, FailedPrecondition] = OrderedDict()

    def resident(self, name: str) -> list[int]:
        return sorted(v for n, v in self._resident if n == name)

    def peek(self, name: str, version: int) -> V | None:
        """The resident version (now the most recently used), or None; never loads."""
        key = (name, version)
        served = self._resident.get(key)
        if served is not None:
            self._resident.move_to_end(key)
        return served

    async def get(self, name: str, version: int) -> V:
        """The version, loaded now when it is not resident; a caller that gives up does not
        cancel a load others wait for."""
        served = self.peek(name, version)
        if served is not None:
            return served
        key = (name, version)
        refused = self._refused.get(key)
        if refused is not None:
            raise refused
        loading = self._loading.get(key)
        if loading is None:
            loading = self._loading[key] = asyncio.ensure_future(self._load_one(key))
            # Retrieved here too, for a load whose every caller gave up before it failed.
            loading.add_done_callback(lambda done: done.cancelled() or done.exception())
        return await asyncio.shield(loading)

    async def _load_one(self, key: Key) -> V:
        name, version = key
        try:
            served = await self._load(name, version)
        except FailedPrecondition as error:
            PINNED_LOADS.labels(name, "refused").inc()
            self._refused[key] = error
            while len(self._refused) > _REMEMBERED_REFUSALS:
                self._refused.popitem(last=False)
            raise
        except NotFound:
            PINNED_LOADS.labels(name, "not_found").inc()
            raise
        except FlywheelError:
            PINNED_LOADS.labels(name, "failed").inc()
            raise
        finally:
            del self._loading[key]
        PINNED_LOADS.labels(name, "loaded").inc()
        self._resident[key] = served
        while len(self._resident) > self.capacity:
            (old_name, _), _ = self._resident.popitem(last=False)
            PINNED_EVICTIONS.labels(old_name).inc()
            self._count(old_name)
        self._count(name)
        return served

    def drop(self, name: str) -> None:
        """Forgets every resident version of `name` (requests holding one finish on it)."""
        for key in [k for k in self._resident if k[0] == name]:
            del self._resident[key]
        self._count(name)

    def _count(self, name: str) -> None:
        PINNED_RESIDENT.labels(name).set(sum(1 for n, _ in self._resident if n == name))
