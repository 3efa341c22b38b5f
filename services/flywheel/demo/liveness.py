"""Is the mesh still there? The demo and the replay stop within seconds when it goes away.

The actors of a run retry what fails (a service restarting under its supervisor comes back),
so a mesh that is gone for good would keep them retrying forever. ``until_mesh_gone`` runs
the work beside a watcher asking every service's ``grpc.health.v1`` once a second; a service
that has not answered for ``grace_s`` ends the work with ``MeshGone`` naming it. NOT_SERVING
does not count: the service is there, waiting for a dependency or a model.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Mapping
from typing import TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from flywheel.common.grpc.client import aio_channel, health_status
from flywheel.common.settings import GrpcSecuritySettings

T = TypeVar("T")

GRACE_S = 5.0
EVERY_S = 1.0


class MeshUnavailable(Exception):
    """The mesh is not there to run against (the message names the service)."""


class MeshGone(MeshUnavailable):
    """A service of the mesh stopped answering during the run."""


def check_mesh(targets: Mapping[str, str], security: GrpcSecuritySettings | None = None) -> None:
    """Every service answers its health check; all but inference (which may wait for its
    first model) are SERVING. Fails fast, naming the first one that is not. Blocking."""
    for name, target in targets.items():
        status = health_status(target, timeout_s=3.0, security=security)
        if status == "SERVING" or (name == "inference" and status == "NOT_SERVING"):
            continue
        raise MeshUnavailable(f"{name} at {target} is {status}: start the mesh with `flywheel up`")


class MeshWatcher:
    """Asks each service's health every ``every_s``; ``watch()`` returns only by raising
    ``MeshGone``. The pure part, ``observe``, decides from answers and their times."""

    def __init__(self, targets: Mapping[str, str], grace_s: float = GRACE_S,
                 every_s: float = EVERY_S, security: GrpcSecuritySettings | None = None) -> None:
        self.targets = dict(targets)
        self.security = security
        self.grace_s = grace_s
        self.every_s = every_s
        self._silent_since: dict[str, float] = {}

    def observe(self, name: str, answered: bool, now: float) -> None:
        if answered:
            self._silent_since.pop(name, None)
            return
        since = self._silent_since.setdefault(name, now)
        if now - since >= self.grace_s:
            raise MeshGone(
                f"the mesh went away: {name} at {self.targets[name]} has not answered for "
                f"{now - since:.0f}s (`flywheel status` tells; `flywheel up` starts it again)"
            )

    async def watch(self) -> None:
        channels = {name: aio_channel(target, security=self.security)
                    for name, target in self.targets.items()}
        try:
            stubs = {name: health_pb2_grpc.HealthStub(ch) for name, ch in channels.items()}
            while True:
                answers = await asyncio.gather(*(self._answers(stub) for stub in stubs.values()))
                now = time.monotonic()
                for name, answered in zip(stubs, answers, strict=True):
                    self.observe(name, answered, now)
                await asyncio.sleep(self.every_s)
        finally:
            for channel in channels.values():
                await channel.close()

    async def _answers(self, stub: health_pb2_grpc.HealthStub) -> bool:
        try:
            await stub.Check(health_pb2.HealthCheckRequest(), timeout=self.every_s)
        except grpc.aio.AioRpcError:
            return False
        return True


async def until_mesh_gone(work: Awaitable[T], watcher: MeshWatcher) -> T:
    """The result of ``work``; ``MeshGone`` (the work cancelled) if the mesh goes first."""
    work_task = asyncio.ensure_future(work)
    watch_task = asyncio.ensure_future(watcher.watch())
    try:
        done, _ = await asyncio.wait({work_task, watch_task}, return_when=asyncio.FIRST_COMPLETED)
        if watch_task in done:
            work_task.cancel()
            await asyncio.gather(work_task, return_exceptions=True)
            watch_task.result()  # raises MeshGone
        return work_task.result()
    finally:
        for task in (work_task, watch_task):
            task.cancel()
        await asyncio.gather(work_task, watch_task, return_exceptions=True)
