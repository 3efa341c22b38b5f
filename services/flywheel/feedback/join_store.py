"""The join state in Redis: one hash per join key, `<prefix>feedback:join:<key>`, with a TTL.

The only module that knows the key layout. Reads and writes are pipelined per batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import redis
import redis.asyncio as aioredis

from flywheel.common.dependency import Dependency
from flywheel.feedback.join import Entry, JoinState, Validity
from flywheel.v1 import events_pb2


class JoinStore:
    def __init__(self, client: redis.Redis, key_prefix: str, ttl_s: float) -> None:
        self._redis = client
        self._prefix = f"{key_prefix}feedback:join:"
        self._ttl_ms = int(ttl_s * 1000)

    def key(self, join_key: str) -> str:
        return self._prefix + join_key

    def load(self, join_keys: Iterable[str], validity: Validity) -> dict[str, JoinState]:
        keys = list(dict.fromkeys(join_keys))
        pipe = self._redis.pipeline(transaction=False)
        for join_key in keys:
            pipe.hgetall(self.key(join_key))
        stored = pipe.execute()
        return {
            join_key: JoinState.from_stored(
                {name.decode(): raw for name, raw in fields.items()}, validity
            )
            for join_key, fields in zip(keys, stored, strict=True)
        }

    def save(self, states: Mapping[str, JoinState]) -> int:
        """Writes every state's pending writes (idempotent: same input, same bytes)."""
        pipe = self._redis.pipeline(transaction=False)
        written = 0
        for join_key, state in states.items():
            if not state.writes:
                continue
            key = self.key(join_key)
            pipe.hset(key, mapping={name: e.encode() for name, e in state.writes.items()})
            pipe.pexpire(key, self._ttl_ms)
            written += 1
        if written:
            pipe.execute()
        for state in states.values():
            state.writes.clear()
        return written


class JoinLookup:
    """Async read side for the gRPC handlers: what was logged for a prediction id, if seen.
    Bounded by the caller's deadline; Redis stalled or down is Unavailable naming it (see
    `flywheel.common.dependency`)."""

    def __init__(self, client: aioredis.Redis, key_prefix: str, redis: Dependency) -> None:
        self._redis = client
        self._prefix = f"{key_prefix}feedback:join:"
        self._dependency = redis

    async def predictions(self, join_keys: Iterable[str]
                          ) -> dict[str, events_pb2.PredictionLogged]:
        keys = list(dict.fromkeys(join_keys))
        if not keys:
            return {}
        stored = await self._dependency.wait(self._read(keys))
        found = {}
        for join_key, fields in zip(keys, stored, strict=True):
            for name, raw in fields.items():
                if name.startswith(b"p:"):
                    found[join_key] = events_pb2.PredictionLogged.FromString(
                        Entry.decode(raw).payload
                    )
                    break
        return found

    async def _read(self, keys: list[str]) -> list[dict[bytes, bytes]]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for join_key in keys:
                pipe.hgetall(self._prefix + join_key)
            return await pipe.execute()
