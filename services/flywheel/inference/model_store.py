"""The serving state: per model, the champion and the shadow version, swapped atomically.

A model's state is an immutable `ModelState`; a change builds the new one beside it (new
versions verified, loaded and warmed first) and replaces the dict entry in one assignment,
so a request sees either the old state or the new one, never a mix. Each request holds the
`ServedVersion` it resolved for its whole life: a retired version's session and batcher stay
alive (plain references) until the last request on it has answered, and every response names
exactly the version that produced it.

A request that names another registered version (pinned) gets it from `PinnedVersions`:
loaded on demand through the same loader (the same checks, the same refusals), at most
`max_pinned` resident, least recently used evicted. Unknown version: NOT_FOUND; a version the
registry marks refused, or one whose artifact fails the checks: FAILED_PRECONDITION with the
reason. Pinned versions never change what champion and shadow serve.

A model unloaded on request (the Open Inference Protocol's repository extension) serves
nothing, and announcements leave it so, until it is loaded again: then it comes back at the
registry's aliases.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from prometheus_client import Gauge

from flywheel.common.errors import FailedPrecondition, FlywheelError, NotFound, Unavailable
from flywheel.common.registry import CHAMPION, SHADOW, ModelRegistry
from flywheel.inference.batcher import Batcher
from flywheel.inference.loader import LoadedModel, Rejected
from flywheel.inference.pinned import PinnedVersions
from flywheel.v1 import common_pb2

log = logging.getLogger("flywheel.inference.models")

SERVING_VERSION = Gauge(
    "flywheel_inference_serving_version", "Version serving per model and role.", ["model", "role"]
)


@dataclass(frozen=True, eq=False)
class ServedVersion:
    loaded: LoadedModel
    batcher: Batcher

    @property
    def version_text(self) -> str:
        """The version as the Open Inference Protocol writes it (a decimal string)."""
        return str(self.loaded.meta.version)

    @property
    def meta(self) -> common_pb2.ModelVersion:
        return self.loaded.meta

    @property
    def name(self) -> str:
        return self.loaded.meta.model_name

    @property
    def version(self) -> int:
        return self.loaded.meta.version


@dataclass(frozen=True)
class ModelState:
    champion: ServedVersion | None = None
    shadow: ServedVersion | None = None

    def by_version(self) -> dict[int, ServedVersion]:
        return {s.version: s for s in (self.champion, self.shadow) if s is not None}


_NONE = ModelState()
LoadFn = Callable[[common_pb2.ModelVersion], Awaitable[LoadedModel]]
BatcherFactory = Callable[[LoadedModel], Batcher]


class ModelStore:
    def __init__(
        self, registry: ModelRegistry, load: LoadFn, make_batcher: BatcherFactory,
        *, max_pinned: int = 4,
    ) -> None:
        self._registry = registry
        self._load = load
        self._make_batcher = make_batcher
        self._pinned: PinnedVersions[ServedVersion] | None = (
            PinnedVersions(max_pinned, self._load_pinned) if max_pinned > 0 else None)
        self._models: dict[str, ModelState] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        # Until the registry's models were loaded once, "unknown" may only mean "not yet".
        self.started = False
        # Models unloaded on request: nothing of them serves until they are loaded again.
        self.unloaded: set[str] = set()

    # -- reading (every request) -------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """At least one model has a champion loaded."""
        return any(state.champion is not None for state in self._models.values())

    def model_names(self) -> list[str]:
        return sorted(n for n, s in self._models.items() if s.champion or s.shadow)

    def current(self, name: str) -> ModelState:
        """The model's champion and shadow now (both None for a model not served)."""
        return self._models.get(name) or _NONE

    def state(self, name: str) -> ModelState:
        state = self._models.get(name)
        if state is None or (state.champion is None and state.shadow is None):
            self._refuse_unloaded(name)
            if not self.started:
                raise Unavailable("the server is loading its models; retry shortly")
            raise NotFound(f"unknown model {name!r}", field="model_name")
        return state

    def resolve(self, name: str, version: int = 0, alias: str = CHAMPION) -> ServedVersion:
        """The version to serve: `version` when given (it must be loaded), else `alias`'s."""
        state = self.state(name)
        if version:
            served = state.by_version().get(version)
            if served is None:
                raise NotFound(f"model {name!r} version {version} is not served", field="version")
            return served
        if alias == CHAMPION:
            served = state.champion
        elif alias == SHADOW:
            served = state.shadow
        else:
            raise NotFound(f"model {name!r} has no alias {alias!r}", field="model")
        if served is None:
            raise Unavailable(f"model {name!r} has no {alias} version loaded")
        return served

    async def acquire(self, name: str, version: int = 0, alias: str = CHAMPION) -> ServedVersion:
        """`resolve`, except that a `version` neither champion nor shadow is served pinned
        (loaded now when it is not resident)."""
        if not version:
            return self.resolve(name, 0, alias)
        self._refuse_unloaded(name)
        state = self._models.get(name)
        if state is not None:
            for served in (state.champion, state.shadow):
                if served is not None and served.version == version:
                    return served
        if self._pinned is None:
            raise FailedPrecondition(
                f"model {name!r} version {version} is neither champion nor shadow, and "
                "loading other versions on demand is off (max_pinned_versions is 0)",
                field="version")
        return await self._pinned.get(name, version)

    def resident(self, name: str, version: int) -> ServedVersion | None:
        """The version when it is loaded (champion, shadow or pinned); never loads."""
        state = self._models.get(name)
        if state is not None:
            served = state.by_version().get(version)
            if served is not None:
                return served
        return self._pinned.peek(name, version) if self._pinned is not None else None

    def served_versions(self, name: str) -> list[int]:
        """Every version of `name` loaded now: champion, shadow and pinned."""
        state = self._models.get(name)
        loaded = set(state.by_version()) if state is not None else set()
        if self._pinned is not None:
            loaded.update(self._pinned.resident(name))
        return sorted(loaded)

    def _refuse_unloaded(self, name: str) -> None:
        if name in self.unloaded:
            raise FailedPrecondition(f"model {name!r} is unloaded; load it to serve it again",
                                     field="model_name")

    async def _load_pinned(self, name: str, version: int) -> ServedVersion:
        meta = await asyncio.to_thread(self._registry.get, name, version)
        if meta.status == common_pb2.MODEL_VERSION_STATUS_REFUSED:
            raise FailedPrecondition(
                f"model {name!r} version {version} was refused: {meta.status_reason or 'no reason given'}",
                field="version")
        try:
            model = await self._load(meta)
        except Rejected as error:
            raise FailedPrecondition(
                f"model {name!r} version {version} was refused: {error.message}",
                field="version") from None
        except FlywheelError:
            raise
        except Exception as error:  # noqa: BLE001 - a timeout or I/O error: worth a retry
            log.error("could not load %s v%d on demand: %s", name, version, error)
            raise Unavailable(
                f"model {name!r} version {version} could not be loaded now ({type(error).__name__}); "
                "retry shortly", field="version") from None
        log.info("pinned %s v%d loaded on demand", name, version,
                 extra={"model": name, "version": version})
        return ServedVersion(model, self._make_batcher(model))

    # -- changing ----------------------------------------------------------------------------

    async def load_from_registry(self) -> None:
        """Start-up: every model of the registry at its current aliases."""
        names = await asyncio.to_thread(self._registry.model_names)
        for name in names:
            aliases = await asyncio.to_thread(self._registry.aliases, name)
            await self.reconcile(name, aliases)
        self.started = True

    async def reconcile(self, name: str, aliases: Mapping[str, int]) -> list[int]:
        """Brings `name` to `aliases` (champion, shadow); returns the versions refused.

        A missing champion alias keeps the champion serving; a missing shadow alias drops
        the shadow. A version that fails to load leaves its role as it was.
        """
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            if name in self.unloaded:
                return []
            current = self._models.get(name, ModelState())
            loaded = current.by_version()
            refused: list[int] = []

            async def obtain(version: int) -> ServedVersion | None:
                if version in loaded:
                    return loaded[version]
                try:
                    meta = await asyncio.to_thread(self._registry.get, name, version)
                    model = await self._load(meta)
                except Rejected:
                    refused.append(version)
                    return None
                except Exception as error:  # noqa: BLE001 - keep serving the old one
                    log.error("could not load %s v%d: %s", name, version, error)
                    refused.append(version)
                    return None
                served = ServedVersion(model, self._make_batcher(model))
                loaded[version] = served
                return served

            champion = current.champion
            wanted = int(aliases.get(CHAMPION, 0))
            if wanted and (champion is None or champion.version != wanted):
                champion = await obtain(wanted) or champion
            shadow = None
            wanted_shadow = int(aliases.get(SHADOW, 0))
            if wanted_shadow and (champion is None or wanted_shadow != champion.version):
                shadow = await obtain(wanted_shadow) or current.shadow
                if shadow is not None and champion is not None and shadow.version == champion.version:
                    shadow = None
            new = ModelState(champion, shadow)
            if new != current:
                self._models[name] = new  # the swap: one assignment
                self._announce(name, current, new)
            return refused

    async def unload(self, name: str) -> None:
        """Stops serving `name` (champion, shadow and pinned versions) until `load`."""
        if name not in self._models and not await asyncio.to_thread(self._registry.versions, name):
            raise NotFound(f"unknown model {name!r}", field="model_name")
        async with self._locks.setdefault(name, asyncio.Lock()):
            self.unloaded.add(name)
            current = self._models.pop(name, ModelState())
            if self._pinned is not None:
                self._pinned.drop(name)
            self._announce(name, current, ModelState())

    async def load(self, name: str) -> None:
        """Serves `name` at the registry's aliases (again, after `unload`); FAILED_PRECONDITION
        when no champion could be loaded."""
        if not await asyncio.to_thread(self._registry.versions, name):
            raise NotFound(f"unknown model {name!r}", field="model_name")
        self.unloaded.discard(name)
        refused = await self.reconcile(name, await asyncio.to_thread(self._registry.aliases, name))
        if self.current(name).champion is None:
            why = f"version {refused[0]} was refused" if refused else "it has no champion"
            raise FailedPrecondition(f"model {name!r} could not be loaded: {why}",
                                     field="model_name")

    def _announce(self, name: str, old: ModelState, new: ModelState) -> None:
        for role, before, after in (
            (CHAMPION, old.champion, new.champion),
            (SHADOW, old.shadow, new.shadow),
        ):
            if before is after:
                continue
            SERVING_VERSION.labels(name, role).set(after.version if after else 0)
            log.info(
                "%s %s: v%s -> v%s", name, role,
                before.version if before else "-", after.version if after else "-",
                extra={"model": name, "role": role},
            )
