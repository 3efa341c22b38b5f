"""Readiness: named checks (Redis pinged, consumer assigned, model loaded) drive health.

Health is NOT_SERVING until every check passes, goes back to NOT_SERVING when one fails,
and stays NOT_SERVING once draining has begun.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable

from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio

log = logging.getLogger("flywheel.readiness")

Check = Callable[[], bool | Awaitable[bool]]

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Readiness:
    def __init__(self, service_names: list[str], interval_s: float = 0.5) -> None:
        self.health = health_aio.HealthServicer()
        self._service_names = ["", *service_names]
        self._checks: dict[str, Check] = {}
        self._interval_s = interval_s
        self._draining = False
        self._serving: bool | None = None

    def add_check(self, name: str, check: Check) -> None:
        self._checks[name] = check

    @property
    def ready(self) -> bool:
        return bool(self._serving)

    async def evaluate(self) -> bool:
        results = {}
        for name, check in self._checks.items():
            try:
                outcome = check()
                if inspect.isawaitable(outcome):
                    outcome = await asyncio.wait_for(outcome, timeout=max(self._interval_s, 1.0))
                results[name] = bool(outcome)
            except Exception as error:  # noqa: BLE001 - a failing check means not ready
                log.debug("readiness check %s failed: %s", name, error)
                results[name] = False
        serving = all(results.values()) and not self._draining
        if serving != self._serving:
            failing = sorted(name for name, ok in results.items() if not ok)
            log.info("health %s", "SERVING" if serving else f"NOT_SERVING (waiting for {failing})")
            for name in self._service_names:
                await self.health.set(name, SERVING if serving else NOT_SERVING)
            self._serving = serving
        return serving

    async def run(self) -> None:
        while not self._draining:
            await self.evaluate()
            await asyncio.sleep(self._interval_s)

    async def drain(self) -> None:
        self._draining = True
        self._serving = False
        await self.health.enter_graceful_shutdown()
