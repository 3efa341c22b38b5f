"""Every alias change of the mesh, announced on `flywheel.model-versions.v1` before it is
written to the registry.

One writer, one ordering: promotions (by a run, by the live gate, by hand through
PromoteModelVersion), retirements, rollbacks and the withdrawal of a version inference
refused all go through `Promotions`, and each is one registry alias transaction
(`ModelRegistry.change_aliases`): under the model's lock, the new alias state is computed
from the current one, announced, and written only once Kafka acknowledged the announcement.
So the order of the announcements on the topic is the order of the registry's states, and a
change that cannot be announced changes nothing: UNAVAILABLE naming Kafka, registry as it
was. `publish` is injected (the app binds it to an `Announcer`) and blocks until the
announcement is acknowledged.

An announcement whose delivery timed out may still have reached the broker (it was on the
wire when the broker stalled). The model is then marked unsettled, and `settle` (run
periodically by the app) re-announces the registry's state until Kafka acknowledges it, so
the last record per model on the compacted topic is always the registry's state.

Inference reports each load on `flywheel.model-loads.v1`; a refused version is marked
REFUSED in the registry (`refused`), every alias naming it returns to the version serving
before it (announced as a rollback whose reason names the refusal), and no later promotion
can point an alias at it (FAILED_PRECONDITION naming the status).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from flywheel.common import aliases as plans
from flywheel.common.announce import announcement
from flywheel.common.errors import InvalidArgument, Unavailable
from flywheel.common.registry import CHAMPION, SHADOW, ModelRegistry, Planner
from flywheel.training.metrics import ALIAS_CHANGES, REFUSALS
from flywheel.v1 import common_pb2, events_pb2

log = logging.getLogger("flywheel.training.promotions")

Publish = Callable[[events_pb2.ModelVersionAnnounced], None]
# (model, new champion, previous champion): the live gate watches new champions.
PromotedHook = Callable[[str, int, int], None]

PROMOTED = events_pb2.MODEL_VERSION_CHANGE_PROMOTED
SHADOWED = events_pb2.MODEL_VERSION_CHANGE_SHADOWED
RETIRED = events_pb2.MODEL_VERSION_CHANGE_RETIRED
ROLLED_BACK = events_pb2.MODEL_VERSION_CHANGE_ROLLED_BACK


def _unchanged(state: plans.AliasState, _refused: plans.Refused) -> plans.AliasPlan:
    return plans.AliasPlan(state, state)


class Promotions:
    def __init__(self, registry: ModelRegistry, publish: Publish) -> None:
        self.registry = registry
        self._publish = publish
        self.on_promoted: PromotedHook | None = None
        self._unsettled: set[str] = set()
        self._unsettled_lock = threading.Lock()

    # -- announcing --------------------------------------------------------------------------

    def _send(self, record: events_pb2.ModelVersionAnnounced) -> None:
        name = record.model_version.model_name
        try:
            self._publish(record)
        except Unavailable:
            with self._unsettled_lock:
                self._unsettled.add(name)
            raise
        ALIAS_CHANGES.labels(name, events_pb2.ModelVersionChange.Name(record.change).removeprefix(
            "MODEL_VERSION_CHANGE_").lower()).inc()
        log.info("announced %s v%d: %s, aliases %s (%s)", name, record.model_version.version,
                 events_pb2.ModelVersionChange.Name(record.change), dict(record.aliases),
                 record.reason)

    def _apply(self, name: str, planner: Planner, change: int,
               subject: Callable[[plans.AliasPlan], int], reason: str,
               announce_unchanged: bool = True) -> plans.AliasPlan:
        """One alias transaction: plan, announce (subject's metadata), write."""

        def announce(plan: plans.AliasPlan) -> None:
            if not (plan.changes or announce_unchanged):
                return  # the history alone is the registry's business
            meta = self.registry.get(name, subject(plan))
            try:
                self._send(announcement(meta, change, plan.changes, plan.after.aliases, reason))
            except Unavailable as error:
                raise Unavailable(f"model {name!r}: aliases not changed: {error.message}",
                                  field=error.field) from None

        return self.registry.change_aliases(name, planner, announce)

    def registered(self, name: str, version: int, reason: str) -> None:
        """Announces a new version (no alias change), in the same ordering as the others: the
        aliases it carries are the registry's at that point of the log."""
        self.registry.get(name, version)
        self._apply(name, _unchanged, events_pb2.MODEL_VERSION_CHANGE_REGISTERED,
                    lambda _: version, reason)

    # -- alias changes -----------------------------------------------------------------------

    def promote(self, name: str, version: int, alias: str, reason: str) -> int:
        """Points `alias` (champion or shadow) at `version`; returns the previous version."""
        alias = alias or CHAMPION
        if alias not in (CHAMPION, SHADOW):
            raise InvalidArgument(f"alias must be {CHAMPION!r} or {SHADOW!r}", field="alias")
        self.registry.get(name, version)
        plan = self._apply(
            name, lambda state, refused: plans.promote(name, state, version, alias, refused),
            PROMOTED if alias == CHAMPION else SHADOWED, lambda _: version, reason,
        )
        previous = plan.previous(alias)
        if alias == CHAMPION and self.on_promoted and previous != version:
            self.on_promoted(name, version, previous)
        return previous

    def retire_shadow(self, name: str, reason: str) -> int:
        plan = self._apply(name, lambda state, _: plans.retire(state, SHADOW), RETIRED,
                           lambda p: p.previous(SHADOW), reason, announce_unchanged=False)
        return plan.previous(SHADOW)

    def rollback(self, name: str, reason: str) -> tuple[int, int]:
        """Champion back to the one before it (FAILED_PRECONDITION when there is none)."""
        plan = self._apply(name, lambda state, refused: plans.rollback(name, state, refused),
                           ROLLED_BACK, lambda p: p.after.champion, reason)
        return plan.before.champion, plan.after.champion

    def refused(self, name: str, version: int, reason: str) -> plans.AliasPlan:
        """Inference refused `version`: marked REFUSED, and every alias naming it returns to
        the version serving before it (announced as a rollback naming the refusal)."""
        self.registry.set_status(name, version, common_pb2.MODEL_VERSION_STATUS_REFUSED, reason)
        REFUSALS.labels(name).inc()
        why = f"inference refused v{version}: {reason}"
        plan = self._apply(
            name, lambda state, refused: plans.withdraw(state, version, refused), ROLLED_BACK,
            lambda p: p.after.champion or version, why, announce_unchanged=False,
        )
        if plan.changes:
            log.warning("%s: %s; aliases now %s", name, why, dict(plan.after.aliases))
        return plan

    # -- after a failed announcement ---------------------------------------------------------

    @property
    def unsettled(self) -> set[str]:
        with self._unsettled_lock:
            return set(self._unsettled)

    def settle(self) -> list[str]:
        """Re-announces the registry's aliases of every model whose last announcement failed;
        returns the models settled now (the others stay for the next call)."""
        settled = []
        for name in sorted(self.unsettled):
            if not self.registry.versions(name):
                self._unsettled.discard(name)
                continue
            try:
                self._apply(name, _unchanged, ROLLED_BACK,
                            lambda p, name=name: (p.after.champion or p.after.shadow
                                                  or self._latest(name)),
                            "re-announced: an earlier announcement was not acknowledged; "
                            "the registry's aliases stand")
            except Unavailable as error:
                log.warning("%s still unsettled: %s", name, error.message)
                continue
            with self._unsettled_lock:
                self._unsettled.discard(name)
            settled.append(name)
        return settled

    def _latest(self, name: str) -> int:
        versions = self.registry.versions(name)
        return versions[-1].version if versions else 0
