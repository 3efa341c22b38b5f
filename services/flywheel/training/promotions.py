"""Alias changes in the registry, each announced on `flywheel.model-versions.v1`.

Every promotion, shadowing, retirement and rollback goes through here, so the registry and
the feed the inference service follows never disagree. `publish` is injected (the app binds
it to the Kafka producer) and blocks until the announcement is acknowledged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from flywheel.common.announce import announcement
from flywheel.common.errors import InvalidArgument
from flywheel.common.registry import CHAMPION, SHADOW, ModelRegistry
from flywheel.v1 import events_pb2

log = logging.getLogger("flywheel.training.promotions")

Publish = Callable[[events_pb2.ModelVersionAnnounced], None]
# (model, new champion, previous champion): the live gate watches new champions.
PromotedHook = Callable[[str, int, int], None]


class Promotions:
    def __init__(self, registry: ModelRegistry, publish: Publish) -> None:
        self.registry = registry
        self._publish = publish
        self.on_promoted: PromotedHook | None = None

    def _announce(self, name: str, version: int, change: int,
                  alias_changes: list[tuple[str, int, int]], reason: str) -> None:
        self._publish(announcement(self.registry, name, version, change, alias_changes, reason))
        log.info("announced %s v%d: %s (%s)", name, version,
                 events_pb2.ModelVersionChange.Name(change), reason)

    def registered(self, name: str, version: int, reason: str) -> None:
        self._announce(name, version, events_pb2.MODEL_VERSION_CHANGE_REGISTERED, [], reason)

    def promote(self, name: str, version: int, alias: str, reason: str) -> int:
        """Points `alias` (champion or shadow) at `version`; returns the previous version."""
        alias = alias or CHAMPION
        if alias not in (CHAMPION, SHADOW):
            raise InvalidArgument(f"alias must be {CHAMPION!r} or {SHADOW!r}", field="alias")
        self.registry.get(name, version)
        if alias == SHADOW:
            previous = self.registry.set_alias(name, SHADOW, version)
            self._announce(name, version, events_pb2.MODEL_VERSION_CHANGE_SHADOWED,
                           [(SHADOW, version, previous)], reason)
            return previous
        current = self.registry.aliases(name).get(CHAMPION, 0)
        changes = self.registry.promote(name, version, CHAMPION)
        previous = next((p for a, _, p in changes if a == CHAMPION), current)
        self._announce(name, version, events_pb2.MODEL_VERSION_CHANGE_PROMOTED, changes, reason)
        if self.on_promoted and previous != version:
            self.on_promoted(name, version, previous)
        return previous

    def retire_shadow(self, name: str, reason: str) -> int:
        version = self.registry.remove_alias(name, SHADOW)
        if version:
            self._announce(name, version, events_pb2.MODEL_VERSION_CHANGE_RETIRED,
                           [(SHADOW, 0, version)], reason)
        return version

    def rollback(self, name: str, reason: str) -> tuple[int, int]:
        """Champion back to the one before it (FAILED_PRECONDITION when there is none)."""
        rolled_from, rolled_to = self.registry.rollback(name)
        self._announce(name, rolled_to, events_pb2.MODEL_VERSION_CHANGE_ROLLED_BACK,
                       [(CHAMPION, rolled_to, rolled_from)], reason)
        return rolled_from, rolled_to
