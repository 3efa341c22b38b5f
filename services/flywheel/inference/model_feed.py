"""Following flywheel.model-versions.v1: each announcement brings its model to the aliases
the announcement carries (champion, shadow), through the store's load-beside-then-swap.

Every replica must see every announcement, so the consumer's group is unique per process and
starts from the beginning of the compacted log. Only the newest record per model of a polled
batch is applied: a replay at start-up converges on the current aliases without loading each
historical version on the way. The swap continues the trace of the announcement it applies
(a training run's, or a promote or rollback call's).
"""

from __future__ import annotations

import asyncio
import logging

from flywheel.common import tracing
from flywheel.common.kafka.records import Record
from flywheel.common.registry import CHAMPION, SHADOW
from flywheel.inference.model_store import ModelStore
from flywheel.v1 import events_pb2

log = logging.getLogger("flywheel.inference.model_feed")


class ModelFeedHandler:
    """The consumer's handler; runs in the consumer thread, applies changes on the loop."""

    def __init__(self, store: ModelStore, loop: asyncio.AbstractEventLoop, timeout_s: float) -> None:
        self._store = store
        self._loop = loop
        self._timeout_s = timeout_s
        self.applied = 0

    def __call__(self, records: list[Record[events_pb2.ModelVersionAnnounced]]) -> None:
        latest: dict[str, Record[events_pb2.ModelVersionAnnounced]] = {}
        for record in records:
            name = record.value.model_version.model_name or (record.key or b"").decode()
            if name:
                latest[name] = record
        for name, record in latest.items():
            announcement = record.value
            aliases = dict(announcement.aliases)
            log.info(
                "announcement for %s: %s v%d, aliases %s", name,
                events_pb2.ModelVersionChange.Name(announcement.change),
                announcement.model_version.version, aliases,
            )
            future = asyncio.run_coroutine_threadsafe(
                self._swap(name, aliases, record.headers), self._loop
            )
            future.result(timeout=self._timeout_s)
            self.applied += 1

    async def _swap(self, name: str, aliases: dict[str, int], headers: dict[str, str]) -> None:
        with tracing.continued(headers, "swap model", {
            "flywheel.model": name, "flywheel.model.version": aliases.get(CHAMPION, 0),
            "flywheel.model.shadow_version": aliases.get(SHADOW, 0),
        }):
            await self._store.reconcile(name, aliases)
