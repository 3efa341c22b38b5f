"""One Lua script's calls pipelined over one Redis connection: the feature store's read path.

redis-py's asyncio client spends about 100 us of CPU per call (an encode per argument, a
connection checkout and release, a timeout wrapper on each of send and read), a quarter of
what a 1-entity GetOnlineFeatures costs the server. Here a call packs its EVALSHA in a few
joins, writes it on the one connection without waiting for earlier calls, and parks a
future; Redis answers a connection's commands in order, so replies resolve the futures
first in, first out. A caller that gives up (cancelled) leaves its slot, and its reply is
dropped when it comes.

Failures: a reply not received within `timeout_s`, a lost connection, or a reply that is not
RESP2 fails every call waiting on the connection with redis-py's TimeoutError or
ConnectionError and closes it (the stream is no longer in step); the next call reconnects.
An error reply fails only its call, as redis-py would raise it (NoScriptError when Redis
does not hold the script: the caller loads it through redis-py and retries). Plain TCP and
Unix socket URLs only (`from_url` answers None for TLS, where redis-py stays the client).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from typing import Any

from redis.asyncio.connection import SSLConnection, parse_url
from redis.exceptions import BusyLoadingError, NoScriptError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(value), value)


def command(*parts: bytes) -> bytes:
    """A RESP2 command (an array of bulk strings)."""
    return b"*%d\r\n" % len(parts) + b"".join(map(_bulk, parts))


class _Connection(asyncio.Protocol):
    """One connection: the writes, and the replies matched to the waiting calls in order."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiting: deque[tuple[asyncio.Future, float]] = deque()
        self.closed = False
        self._buffer = bytearray()
        self._watchdog: asyncio.TimerHandle | None = None
        self.timeout_s = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisConnectionError(f"connection to Redis lost: {exc or 'closed'}"))

    def send(self, payload: bytes) -> asyncio.Future:
        if self.closed:
            raise RedisConnectionError("connection to Redis closed")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.waiting.append((future, loop.time() + self.timeout_s))
        if self._watchdog is None:
            self._watchdog = loop.call_at(self.waiting[0][1], self._check)
        self.transport.write(payload)  # type: ignore[union-attr]
        return future

    def _check(self) -> None:
        self._watchdog = None
        if not self.waiting:
            return
        loop = asyncio.get_running_loop()
        deadline = self.waiting[0][1]
        if deadline <= loop.time():
            self.fail(RedisTimeoutError(f"no reply from Redis within {self.timeout_s:g}s"))
        else:
            self._watchdog = loop.call_at(deadline, self._check)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        start = 0
        size = len(buffer)
        while start < size:
            end = buffer.find(b"\r\n", start)
            if end < 0:
                break
            kind = buffer[start]
            if kind == 0x24:  # '$' bulk string
                length = int(buffer[start + 1:end])
                if length < 0:
                    value: Any = None
                    following = end + 2
                else:
                    following = end + 4 + length
                    if following > size:
                        break
                    value = bytes(buffer[end + 2:following - 2])
            elif kind == 0x2B:  # '+' simple string
                value = bytes(buffer[start + 1:end])
                following = end + 2
            elif kind == 0x2D:  # '-' error
                value = _error(bytes(buffer[start + 1:end]).decode(errors="replace"))
                following = end + 2
            else:
                self.fail(RedisConnectionError(f"unexpected reply from Redis: {kind:#x}"))
                return
            start = following
            if not self.waiting:
                self.fail(RedisConnectionError("a reply from Redis that no call waited for"))
                return
            future, _ = self.waiting.popleft()
            if not future.done():
                if isinstance(value, Exception):
                    future.set_exception(value)
                else:
                    future.set_result(value)
        del buffer[:start]

    def fail(self, error: Exception) -> None:
        """Fails every waiting call and closes the connection."""
        self.closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        while self.waiting:
            future, _ = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)
        if self.transport is not None:
            self.transport.close()


def _error(message: str) -> Exception:
    """An error reply as redis-py would raise it (the kinds the read path tells apart)."""
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    if message.startswith("LOADING"):
        return BusyLoadingError(message)  # a ConnectionError: Redis is starting
    return ResponseError(message)


class ScriptPipe:
    """EVALSHA of one script on one lazily opened, pipelined connection."""

    def __init__(self, script: str, connect: dict[str, Any], timeout_s: float) -> None:
        self.sha = hashlib.sha1(script.encode()).hexdigest().encode()
        self._connect_args = connect
        self._timeout_s = timeout_s
        self._connection: _Connection | None = None
        self._connecting: asyncio.Lock | None = None

    @classmethod
    def from_url(cls, url: str, script: str, timeout_s: float) -> ScriptPipe | None:
        """A pipe to the Redis of `url`, or None where it does not apply (TLS)."""
        options = parse_url(url)
        connection_class = options.get("connection_class")
        if connection_class is not None and issubclass(connection_class, SSLConnection):
            return None
        return cls(script, options, timeout_s)

    async def call(self, keys: list[str], args: list[bytes]) -> Any:
        """The script's reply: one bulk string, or None for a nil reply."""
        head = b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%b\r\n" % (3 + len(keys) + len(args), self.sha)
        count = str(len(keys)).encode()
        payload = b"".join((
            head,
            _bulk(count),
            *[_bulk(key.encode()) for key in keys],
            *map(_bulk, args),
        ))
        connection = self._connection
        if connection is None or connection.closed:
            connection = await self._connect()
        return await connection.send(payload)

    async def _connect(self) -> _Connection:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._connection is not None and not self._connection.closed:
                return self._connection
            options = self._connect_args
            loop = asyncio.get_running_loop()
            try:
                async with asyncio.timeout(self._timeout_s):
                    if options.get("path"):
                        _, connection = await loop.create_unix_connection(
                            _Connection, options["path"]
                        )
                    else:
                        _, connection = await loop.create_connection(
                            _Connection, options.get("host", "localhost"),
                            options.get("port", 6379),
                        )
            except (OSError, TimeoutError) as error:
                raise RedisConnectionError(f"cannot connect to Redis: {error}") from error
            connection.timeout_s = self._timeout_s
            handshake = []
            if options.get("password"):
                credentials = [options["password"].encode()]
                if options.get("username"):
                    credentials.insert(0, options["username"].encode())
                handshake.append(connection.send(command(b"AUTH", *credentials)))
            if options.get("db"):
                handshake.append(connection.send(command(b"SELECT", str(options["db"]).encode())))
            try:
                await asyncio.gather(*handshake)
            except BaseException:
                connection.fail(RedisConnectionError("Redis refused the connection set-up"))
                raise
            self._connection = connection
            return connection

    async def aclose(self) -> None:
        if self._connection is not None:
            self._connection.fail(RedisConnectionError("closed"))
            self._connection = None
