"""Pinned versions: loaded on demand, one load per cold version however many ask, least
recently used evicted, refusals remembered, metrics kept."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from flywheel.common.errors import FailedPrecondition, NotFound, Unavailable
from flywheel.inference.pinned import PinnedVersions


class Loads:
    """A load function that counts its calls; `gate` holds every load until set."""

    def __init__(self, fail: dict[int, Exception] | None = None) -> None:
        self.calls: list[tuple[str, int]] = []
        self.fail = fail or {}
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, name: str, version: int) -> str:
        self.calls.append((name, version))
        await self.gate.wait()
        if version in self.fail:
            raise self.fail[version]
        return f"{name}-v{version}"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_cold_version_is_loaded_once_for_every_concurrent_request():
    loads = Loads()
    loads.gate.clear()
    pinned = PinnedVersions(2, loads)
    before = sample("flywheel_inference_pinned_loads_total", model="lru-a", outcome="loaded")
    waiting = [asyncio.ensure_future(pinned.get("lru-a", 3)) for _ in range(8)]
    await asyncio.sleep(0)
    loads.gate.set()
    assert await asyncio.gather(*waiting) == ["lru-a-v3"] * 8
    assert loads.calls == [("lru-a", 3)]
    assert await pinned.get("lru-a", 3) == "lru-a-v3" and len(loads.calls) == 1
    assert sample("flywheel_inference_pinned_loads_total",
                  model="lru-a", outcome="loaded") == before + 1
    assert sample("flywheel_inference_pinned_versions", model="lru-a") == 1


async def test_the_least_recently_used_is_evicted_beyond_capacity():
    loads = Loads()
    pinned = PinnedVersions(2, loads)
    await pinned.get("lru-b", 1)
    await pinned.get("lru-b", 2)
    await pinned.get("lru-b", 1)  # 1 used again: 2 is now the least recent
    await pinned.get("lru-b", 3)
    assert pinned.resident("lru-b") == [1, 3]
    assert pinned.peek("lru-b", 2) is None
    assert sample("flywheel_inference_pinned_evictions_total", model="lru-b") == 1
    assert sample("flywheel_inference_pinned_versions", model="lru-b") == 2
    await pinned.get("lru-b", 2)  # evicted: loaded again
    assert loads.calls.count(("lru-b", 2)) == 2 and pinned.resident("lru-b") == [2, 3]


async def test_capacity_is_shared_by_all_models():
    pinned = PinnedVersions(2, Loads())
    await pinned.get("lru-c", 1)
    await pinned.get("lru-d", 1)
    await pinned.get("lru-d", 2)
    assert pinned.resident("lru-c") == [] and pinned.resident("lru-d") == [1, 2]
    assert sample("flywheel_inference_pinned_versions", model="lru-c") == 0


async def test_a_refusal_is_remembered_and_other_failures_are_not():
    loads = Loads({4: FailedPrecondition("version 4 was refused: hash"),
                   5: NotFound("no version 5"), 6: Unavailable("disk busy")})
    pinned = PinnedVersions(2, loads)
    for _ in range(2):
        with pytest.raises(FailedPrecondition, match="refused: hash"):
            await pinned.get("lru-e", 4)
        with pytest.raises(NotFound):
            await pinned.get("lru-e", 5)
        with pytest.raises(Unavailable):
            await pinned.get("lru-e", 6)
    assert loads.calls.count(("lru-e", 4)) == 1  # its artifact never changes
    assert loads.calls.count(("lru-e", 5)) == 2 and loads.calls.count(("lru-e", 6)) == 2
    assert pinned.resident("lru-e") == []
    assert sample("flywheel_inference_pinned_loads_total", model="lru-e", outcome="refused") == 1
    assert sample("flywheel_inference_pinned_loads_total", model="lru-e", outcome="failed") == 2


async def test_a_caller_that_gives_up_does_not_cancel_the_shared_load():
    loads = Loads()
    loads.gate.clear()
    pinned = PinnedVersions(1, loads)
    impatient = asyncio.ensure_future(pinned.get("lru-f", 1))
    patient = asyncio.ensure_future(pinned.get("lru-f", 1))
    await asyncio.sleep(0)
    impatient.cancel()
    loads.gate.set()
    assert await patient == "lru-f-v1"
    assert impatient.cancelled() and loads.calls == [("lru-f", 1)]


def test_capacity_must_be_positive():
    with pytest.raises(ValueError):
        PinnedVersions(0, Loads())
