"""Waiting on a dependency (Redis, the feature store) within the caller's deadline.

The rule, the same in every service:

- A call to a dependency made while serving a caller waits at most its *budget*: the smaller
  of the dependency's own timeout (FLYWHEEL_REDIS_TIMEOUT_S,
  FLYWHEEL_INFERENCE_FEATURE_STORE_TIMEOUT_S) and the caller's remaining time less a margin
  to answer in (a tenth of the remaining time, at most 250 ms). Without a caller deadline, the
  dependency's own timeout.
- A dependency that does not answer within its budget, or cannot be reached, is UNAVAILABLE,
  named with its address ("Redis at 127.0.0.1:6379 did not answer within 1.8 s"): the caller
  hears it before its deadline passes, and learns which part to wait for before retrying.
- DEADLINE_EXCEEDED stays the caller's own deadline passing: `budget` raises it when the
  deadline leaves no time to ask the dependency at all (the time went elsewhere), and gRPC
  answers it itself when the server's own work outlasts the deadline.

The caller's deadline comes from `flywheel.common.context.time_left` (set by the gRPC layer).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    ClusterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from flywheel.common.context import time_left
from flywheel.common.errors import DeadlineExceeded, Unavailable

MARGIN_FRACTION = 0.1
MARGIN_MAX_S = 0.25
# Less than this left to wait on a dependency: the caller's deadline has in effect passed.
MIN_WAIT_S = 0.001

T = TypeVar("T")


def budget_within(timeout_s: float, left: float | None) -> float | None:
    """Seconds a dependency may take: `timeout_s`, cut to `left` (the caller's remaining
    time, None for none) less the margin to answer in; None when nothing useful is left."""
    if left is None:
        return timeout_s
    usable = left - min(left * MARGIN_FRACTION, MARGIN_MAX_S)
    if usable < MIN_WAIT_S:
        return None
    return min(timeout_s, usable)


def _never(error: BaseException) -> bool:
    return False


class Dependency:
    """A part this service waits on while serving a caller, named in the errors the caller
    gets. `failed(error)`: whether an error of its client means that it cannot be reached,
    did not answer, or cannot serve for now (its message then goes to the caller after the
    name); other errors are left as they are (a bug of ours is INTERNAL, and logged)."""

    def __init__(
        self, name: str, timeout_s: float, *,
        failed: Callable[[BaseException], bool] = _never,
    ) -> None:
        self.name = name
        self.timeout_s = timeout_s
        self._failed = failed

    def budget(self) -> float:
        """Seconds this call may wait on the dependency (see the module docstring);
        DeadlineExceeded when the caller's deadline leaves no time to ask it."""
        budget = budget_within(self.timeout_s, time_left())
        if budget is None:
            raise DeadlineExceeded(f"the deadline passed before {self.name} could be asked")
        return budget

    def did_not_answer(self, waited_s: float) -> Unavailable:
        return Unavailable(f"{self.name} did not answer within {waited_s:.3g} s")

    def unavailable(self, detail: str) -> Unavailable:
        return Unavailable(f"{self.name} is unavailable: {detail}")

    async def wait(self, awaitable: Awaitable[T]) -> T:
        """`awaitable`'s result, waited on for at most `budget()`; its client's failures as
        Unavailable naming the dependency."""
        try:
            budget = self.budget()
        except DeadlineExceeded:
            if inspect.iscoroutine(awaitable):
                awaitable.close()  # never started
            raise
        bound = asyncio.timeout(budget)
        try:
            async with bound:
                return await awaitable
        except Exception as error:
            if bound.expired():
                raise self.did_not_answer(budget) from None
            if isinstance(error, TimeoutError) or self._failed(error):
                raise self.unavailable(str(error) or type(error).__name__) from error
            raise


def redis_address(url: str) -> str:
    """host:port (or the socket path) of a Redis URL, without its credentials."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}"


# Error replies about Redis's own state, not about the command: Redis cannot serve it for now.
_REDIS_STATES = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OutOfMemoryError,
                 ClusterDownError, TryAgainError)
# The same as a plain ResponseError with the reply's code (redis-py has no class for BUSY, a
# script running past busy-reply-threshold, nor MISCONF, writes refused while Redis cannot
# persist; the feature store's read pipe raises every error reply so).
_REDIS_STATE_REPLIES = ("BUSY ", "MISCONF ", "TRYAGAIN ", "READONLY ", "OOM ", "MASTERDOWN ",
                        "CLUSTERDOWN ", "LOADING ")


def redis_failed(error: BaseException) -> bool:
    """Redis unreachable, not answering, or answering with its own state (loading, busy,
    read-only, out of memory, unable to persist) instead of the command's result."""
    if isinstance(error, _REDIS_STATES):
        return True
    return isinstance(error, ResponseError) and str(error).startswith(_REDIS_STATE_REPLIES)


def redis_dependency(url: str, timeout_s: float) -> Dependency:
    return Dependency(f"Redis at {redis_address(url)}", timeout_s, failed=redis_failed)


def redis_for_callers(url: str, timeout_s: float) -> aioredis.Redis:
    """An asyncio client for the Redis calls a caller waits on (bound them with
    `redis_dependency(...).wait`). A pooled connection found dropped (Redis restarted) is
    tried once more on a new one at once; a timeout is never retried: it spent the budget."""
    return aioredis.Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
    )
