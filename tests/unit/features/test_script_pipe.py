"""The reply side of the read path's pipelined connection: RESP2 replies, whole or cut
anywhere, resolve the waiting calls in order; an error reply fails only its call; anything
else fails them all. (Against real Redis: tests/integration/features/test_read_script.py.)"""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import BusyLoadingError, NoScriptError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError

from flywheel.features.script_pipe import _Connection, command


class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True


def _connection() -> _Connection:
    connection = _Connection()
    connection.timeout_s = 5.0
    connection.connection_made(_Transport())  # type: ignore[arg-type]
    return connection


REPLIES = (
    b"$5\r\nhello\r\n$0\r\n\r\n-NOSCRIPT No matching script\r\n$-1\r\n+OK\r\n$4\r\n\r\n\r\n\r\n"
)


@pytest.mark.parametrize("chunk", [len(REPLIES), 1, 3, 7])
async def test_replies_cut_anywhere_resolve_in_order(chunk: int) -> None:
    connection = _connection()
    calls = [connection.send(b"x") for _ in range(6)]
    for start in range(0, len(REPLIES), chunk):
        connection.data_received(REPLIES[start:start + chunk])
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert results[0] == b"hello"
    assert results[1] == b""
    assert isinstance(results[2], NoScriptError)
    assert results[3] is None
    assert results[4] == b"OK"
    assert results[5] == b"\r\n\r\n"  # a bulk string holding CRLFs
    assert not connection.closed and not connection.waiting


async def test_a_cancelled_call_skips_its_reply() -> None:
    connection = _connection()
    first, second, third = (connection.send(b"x") for _ in range(3))
    second.cancel()
    connection.data_received(b"$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n")
    assert (await first, await third) == (b"a", b"c")


async def test_error_kinds() -> None:
    connection = _connection()
    calls = [connection.send(b"x") for _ in range(2)]
    connection.data_received(b"-LOADING Redis is loading\r\n-ERR wrong\r\n")
    loading, other = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(loading, BusyLoadingError) and isinstance(loading, RedisConnectionError)
    assert type(other) is ResponseError


async def test_an_unexpected_reply_fails_every_call_and_closes() -> None:
    connection = _connection()
    calls = [connection.send(b"x") for _ in range(2)]
    connection.data_received(b":12\r\n")
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(r, RedisConnectionError) for r in results)
    assert connection.closed and connection.transport.closed  # type: ignore[union-attr]
    with pytest.raises(RedisConnectionError):
        connection.send(b"x")


def test_command_encoding() -> None:
    assert command(b"SELECT", b"2") == b"*2\r\n$6\r\nSELECT\r\n$1\r\n2\r\n"
