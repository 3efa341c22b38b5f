"""The rule for waiting on a dependency within the caller's deadline (flywheel.common.dependency)."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from flywheel.common.context import deadline_var
from flywheel.common.dependency import (
    Dependency,
    budget_within,
    redis_address,
    redis_dependency,
)
from flywheel.common.errors import DeadlineExceeded, Unavailable


def test_the_budget_is_the_own_timeout_cut_to_the_callers_time_less_a_margin():
    assert budget_within(2.0, None) == 2.0
    assert budget_within(2.0, 10.0) == 2.0
    assert budget_within(2.0, 2.0) == pytest.approx(1.8)  # a tenth kept to answer in
    assert budget_within(5.0, 4.0) == pytest.approx(3.75)  # the margin is at most 250 ms
    assert budget_within(2.0, 0.1) == pytest.approx(0.09)
    assert budget_within(2.0, 0.0005) is None
    assert budget_within(2.0, -1.0) is None


def test_redis_is_named_by_its_address_without_credentials():
    assert redis_address("redis://127.0.0.1:6390/0") == "127.0.0.1:6390"
    assert redis_address("redis://user:secret@cache.local/2") == "cache.local:6379"
    assert redis_address("unix:///run/redis.sock") == "/run/redis.sock"
    assert redis_dependency("redis://:pw@10.0.0.5:7000/0", 2.0).name == "Redis at 10.0.0.5:7000"


async def test_a_dependency_that_does_not_answer_is_unavailable_within_the_callers_deadline():
    dependency = Dependency("Redis at 127.0.0.1:1", 5.0)
    deadline_var.set(time.monotonic() + 0.3)
    started = time.monotonic()
    with pytest.raises(Unavailable) as caught:
        await dependency.wait(asyncio.sleep(60))
    assert time.monotonic() - started < 0.3
    assert caught.value.message.startswith("Redis at 127.0.0.1:1 did not answer within 0.2")


async def test_its_clients_timeouts_and_lost_connections_are_unavailable_naming_it():
    dependency = redis_dependency("redis://127.0.0.1:6390/0", 2.0)

    async def raising(error):
        raise error

    with pytest.raises(Unavailable, match=r"^Redis at 127\.0\.0\.1:6390 is unavailable: Timeout"):
        await dependency.wait(raising(RedisTimeoutError("Timeout reading from socket")))
    with pytest.raises(Unavailable, match=r"^Redis at 127\.0\.0\.1:6390 is unavailable: .*refused"):
        await dependency.wait(raising(RedisConnectionError("Connection refused")))
    with pytest.raises(ValueError):  # not the dependency's failure: left as it is
        await dependency.wait(raising(ValueError("a bug")))


async def test_a_deadline_that_leaves_no_time_to_ask_is_deadline_exceeded():
    dependency = Dependency("the feature store at 127.0.0.1:1", 2.0)
    deadline_var.set(time.monotonic() - 0.01)
    never_started = asyncio.sleep(60)
    with pytest.raises(DeadlineExceeded, match=r"before the feature store at 127\.0\.0\.1:1"):
        await dependency.wait(never_started)
    assert never_started.cr_frame is None  # closed, not left unawaited


async def test_redis_answering_with_its_own_state_is_unavailable_other_errors_stay_ours():
    dependency = redis_dependency("redis://127.0.0.1:6390/0", 2.0)

    async def raising(error):
        raise error

    busy = ResponseError("BUSY Redis is busy running a script. You can only call SCRIPT KILL "
                         "or SHUTDOWN NOSCRIPT.")
    for state in (busy, ResponseError("MISCONF Redis is configured to save RDB snapshots"),
                  OutOfMemoryError("command not allowed when used memory > 'maxmemory'."),
                  ReadOnlyError("You can't write against a read only replica.")):
        with pytest.raises(Unavailable, match=r"^Redis at 127\.0\.0\.1:6390 is unavailable: "):
            await dependency.wait(raising(state))
    with pytest.raises(ResponseError, match="WRONGTYPE"):  # a fault of the command: ours
        await dependency.wait(raising(ResponseError("WRONGTYPE Operation against a key")))
