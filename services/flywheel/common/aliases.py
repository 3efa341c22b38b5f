"""Alias arithmetic: what a promotion, a rollback, a retirement or a refusal does to a model's
aliases, computed without touching anything.

A model's `AliasState` is its aliases (champion, shadow) and its champion history (a stack:
a promotion pushes, a rollback pops). Each operation here takes the state and the versions
inference refused (version -> reason) and returns an `AliasPlan`: the state after, and the
(alias, version, previous) changes that lead there. The registry applies a plan inside its
alias transaction (see `ModelRegistry.change_aliases`), after the plan was announced, so a
change is never written that nobody heard of.

A refused version is never an alias target: promoting it is a FAILED_PRECONDITION naming its
status, a rollback skips it, and `withdraw` moves every alias naming it back to the version
that served before it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from flywheel.common.errors import FailedPrecondition, InvalidArgument

CHAMPION = "champion"
SHADOW = "shadow"
ROLES = (CHAMPION, SHADOW)

# (alias, new version, previous version); 0 means "points nowhere".
Change = tuple[str, int, int]
Refused = Mapping[int, str]


@dataclass(frozen=True)
class AliasState:
    aliases: Mapping[str, int] = field(default_factory=dict)
    champion_history: tuple[int, ...] = ()
    rolled_back: tuple[int, ...] = ()

    @property
    def champion(self) -> int:
        return int(self.aliases.get(CHAMPION, 0))

    @property
    def shadow(self) -> int:
        return int(self.aliases.get(SHADOW, 0))

    def with_alias(self, alias: str, version: int) -> AliasState:
        aliases = {a: v for a, v in self.aliases.items() if a != alias}
        if version:
            aliases[alias] = version
        return replace(self, aliases=aliases)

    def to_json(self) -> dict:
        return {"aliases": dict(self.aliases), "champion_history": list(self.champion_history),
                "rolled_back": list(self.rolled_back)}

    @classmethod
    def from_json(cls, raw: Mapping) -> AliasState:
        return cls(
            aliases={str(a): int(v) for a, v in raw.get("aliases", {}).items()},
            champion_history=tuple(int(v) for v in raw.get("champion_history", ())),
            rolled_back=tuple(int(v) for v in raw.get("rolled_back", ())),
        )


@dataclass(frozen=True)
class AliasPlan:
    before: AliasState
    after: AliasState
    changes: tuple[Change, ...] = ()

    @property
    def changed(self) -> bool:
        return self.after != self.before

    def previous(self, alias: str) -> int:
        """What `alias` pointed at before this plan."""
        return int(self.before.aliases.get(alias, 0))


def _diff(before: AliasState, after: AliasState) -> tuple[Change, ...]:
    """The alias changes from `before` to `after`, champion first."""
    names = sorted(set(before.aliases) | set(after.aliases), key=lambda a: (a != CHAMPION, a))
    return tuple((a, int(after.aliases.get(a, 0)), int(before.aliases.get(a, 0)))
                 for a in names if after.aliases.get(a, 0) != before.aliases.get(a, 0))


def _plan(before: AliasState, after: AliasState) -> AliasPlan:
    return AliasPlan(before, after, _diff(before, after))


def check_not_refused(name: str, version: int, refused: Refused) -> None:
    if version in refused:
        raise FailedPrecondition(
            f"model {name!r} v{version} has status MODEL_VERSION_STATUS_REFUSED "
            f"(inference refused to load it: {refused[version] or 'no reason given'}); "
            "it cannot be given an alias", field="version")


def promote(name: str, state: AliasState, version: int, alias: str,
            refused: Refused) -> AliasPlan:
    """Points `alias` at `version`. A new champion is pushed on the history and stops being
    the shadow; the champion cannot also be the shadow."""
    if alias not in ROLES:
        raise InvalidArgument(f"alias must be {CHAMPION!r} or {SHADOW!r}", field="alias")
    check_not_refused(name, version, refused)
    if alias == SHADOW:
        if version == state.champion:
            raise FailedPrecondition(f"model {name!r} v{version} is the champion; "
                                     "it cannot be its own shadow", field="version")
        return _plan(state, state.with_alias(SHADOW, version))
    if version == state.champion:
        return _plan(state, state)
    after = replace(state.with_alias(CHAMPION, version),
                    champion_history=(*state.champion_history, version))
    if after.shadow == version:
        after = after.with_alias(SHADOW, 0)
    return _plan(state, after)


def retire(state: AliasState, alias: str) -> AliasPlan:
    """`alias` points nowhere any more (the history is left alone)."""
    return _plan(state, state.with_alias(alias, 0))


def _last_good(history: tuple[int, ...], refused: Refused) -> tuple[int, ...]:
    """The history without its trailing refused entries."""
    kept = list(history)
    while kept and kept[-1] in refused:
        kept.pop()
    return tuple(kept)


def rollback(name: str, state: AliasState, refused: Refused) -> AliasPlan:
    """The champion back to the one before it, skipping refused versions."""
    current = state.champion
    history = _last_good(state.champion_history[:-1], refused) if current else ()
    if not history:
        raise FailedPrecondition(f"model {name!r} has no earlier champion to roll back to",
                                 field="model_name")
    after = replace(state.with_alias(CHAMPION, history[-1]), champion_history=history,
                    rolled_back=(*state.rolled_back, current))
    if after.shadow == after.champion:
        after = after.with_alias(SHADOW, 0)
    return _plan(state, after)


def withdraw(state: AliasState, version: int, refused: Refused) -> AliasPlan:
    """`version` was refused by inference: every alias naming it goes back to what served
    before it (the champion to the latest earlier champion not refused, or nowhere; the shadow
    nowhere), and it leaves the history so that no rollback returns to it."""
    gone = {**refused, version: refused.get(version, "")}
    history = _last_good(tuple(v for v in state.champion_history if v != version), gone)
    after = replace(state, champion_history=history)
    if state.champion == version:
        after = after.with_alias(CHAMPION, history[-1] if history else 0)
    if after.shadow == version or (after.shadow and after.shadow == after.champion):
        after = after.with_alias(SHADOW, 0)
    return _plan(state, after)
