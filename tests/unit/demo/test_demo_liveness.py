"""A run against a mesh that goes away ends with MeshGone naming the service, instead of
retrying forever; a service that answers (even NOT_SERVING) keeps the run going."""

from __future__ import annotations

import asyncio
import socket

import pytest

from flywheel.demo.liveness import MeshGone, MeshWatcher, until_mesh_gone


def test_silence_counts_only_when_it_lasts_the_grace():
    watcher = MeshWatcher({"ingest": "127.0.0.1:1", "training": "127.0.0.1:2"}, grace_s=5.0)
    watcher.observe("ingest", False, now=100.0)
    watcher.observe("ingest", False, now=104.0)
    watcher.observe("ingest", True, now=104.5)  # answered again: the clock starts over
    watcher.observe("ingest", False, now=106.0)
    watcher.observe("training", False, now=106.0)
    watcher.observe("ingest", False, now=110.0)
    with pytest.raises(MeshGone, match=r"training at 127\.0\.0\.1:2 has not answered for 5s"):
        watcher.observe("training", False, now=111.0)


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_work_is_cancelled_when_nothing_answers():
    cancelled = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    watcher = MeshWatcher({"feedback": f"127.0.0.1:{unused_port()}"}, grace_s=0.5, every_s=0.2)
    with pytest.raises(MeshGone, match="feedback"):
        await asyncio.wait_for(until_mesh_gone(forever(), watcher), timeout=30)
    assert cancelled.is_set()


async def test_the_works_result_and_errors_pass_through():
    watcher = MeshWatcher({"feedback": f"127.0.0.1:{unused_port()}"}, grace_s=60, every_s=0.2)

    async def answer() -> int:
        await asyncio.sleep(0.05)
        return 42

    async def fail() -> None:
        raise ValueError("the work's own error")

    assert await until_mesh_gone(answer(), watcher) == 42
    with pytest.raises(ValueError, match="own error"):
        await until_mesh_gone(fail(), watcher)
