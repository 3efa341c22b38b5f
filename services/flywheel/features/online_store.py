"""The Redis online store: the newest feature row and vector per entity.

Newer wins, decided inside Redis by one Lua call per batch, so concurrent writers (the
event consumer, WriteFeatures, a restarted instance replaying) cannot interleave a
read-compare-write. The rule, `supersedes`, orders events by (event time in ms, rank of the
event id) where the rank is crc32 of the id: an equal time with the same id is a duplicate
and changes nothing; an equal time with another id is decided by the rank, so the outcome
does not depend on the order events arrive in.

What an event writes (the documented semantics of the store):
- the row: an event carries the entity's feature set as of its time; a newer event replaces
  the whole row (features it does not carry become unset) and its event time;
- the vector: the newest event that carries a vector sets it; events without one leave it.
Both are order-independent, so the store after any redelivery equals a replay from offset 0.

The row also holds its read-ready copy, the encoded entity and its offsets (see
`flywheel.features.framed`, which holds the read script), written by the same HSET as the
per-feature fields, so replaced with them.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

from flywheel.common.dependency import Dependency
from flywheel.common.validation import event_time_ms
from flywheel.features.framed import READ_SCRIPT, FramedLayout, encoded_entity, read_arguments
from flywheel.features.keys import (
    ROW_EVENT_ID,
    ROW_RANK,
    ROW_TIME,
    VECTOR_VALUES,
    KeySpace,
)
from flywheel.features.script_pipe import ScriptPipe
from flywheel.v1 import events_pb2

# Result bits per event of the write script.
ROW_WRITTEN = 1
VECTOR_WRITTEN = 2

_NEWER = """
local function newer(key, t, r)
  local cur = redis.call('HMGET', key, '@t', '@r')
  if not cur[1] then return true end
  local ct = tonumber(cur[1])
  if t ~= ct then return t > ct end
  return r > tonumber(cur[2])
end
"""

# KEYS: row key, vector key, per event. ARGV per event:
#   time_ms, rank, event_id, n, (feature, encoded value) * n, has_vector, [vector bytes]
# Returns one integer per event: ROW_WRITTEN | VECTOR_WRITTEN bits.
WRITE_SCRIPT = _NEWER + """
local out = {}
local a = 1
for i = 1, #KEYS, 2 do
  local ts, rs, id = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  local t, r = tonumber(ts), tonumber(rs)
  local n = tonumber(ARGV[a + 3])
  local first = a + 4
  a = first + 2 * n
  local result = 0
  if newer(KEYS[i], t, r) then
    local fields = {'@t', ts, '@r', rs, '@id', id}
    for j = first, a - 1 do fields[#fields + 1] = ARGV[j] end
    redis.call('DEL', KEYS[i])
    redis.call('HSET', KEYS[i], unpack(fields))
    result = 1
  end
  local has_vector = ARGV[a]
  a = a + 1
  if has_vector == '1' then
    local v = ARGV[a]
    a = a + 1
    if newer(KEYS[i + 1], t, r) then
      redis.call('HSET', KEYS[i + 1], '@t', ts, '@r', rs, '@id', id, '@v', v)
      result = result + 2
    end
  end
  out[#out + 1] = result
end
return out
"""

@dataclass(frozen=True, slots=True)
class Version:
    """Where an event stands in the newer-wins order."""

    time_ms: int
    rank: int
    event_id: str


def id_rank(event_id: str) -> int:
    return zlib.crc32(event_id.encode())


def version_of(event: events_pb2.Event) -> Version:
    return Version(event_time_ms(event), id_rank(event.event_id), event.event_id)


def supersedes(new: Version, stored: Version | None) -> bool:
    """The newer-wins rule, the same as the Lua scripts'."""
    if stored is None:
        return True
    return (new.time_ms, new.rank) > (stored.time_ms, stored.rank)


_VECTOR_FORMATS: dict[int, struct.Struct] = {}


def pack_vector(values: Sequence[float]) -> bytes:
    packer = _VECTOR_FORMATS.get(len(values))
    if packer is None:
        packer = _VECTOR_FORMATS.setdefault(len(values), struct.Struct(f"<{len(values)}f"))
    return packer.pack(*values)


def write_arguments(
    keys: KeySpace, events: Sequence[events_pb2.Event],
    layouts: Mapping[str, FramedLayout] | None = None,
) -> tuple[list, list]:
    """KEYS and ARGV of the write script for validated events; an entity type with a layout
    gets its encoded entity and offsets fields too."""
    script_keys: list[str] = []
    args: list[object] = []
    layouts = layouts or {}
    for event in events:
        row_prefix = keys.row_prefix(event.entity_type)
        script_keys.append(row_prefix + event.entity_id)
        script_keys.append(keys.vector(event.entity_type, event.entity_id))
        encoded = {name: value.SerializeToString() for name, value in event.features.items()}
        time_ms = event_time_ms(event)
        read_copy: tuple = ()
        layout = layouts.get(event.entity_type)
        if layout is not None:
            framed = encoded_entity(layout, event.entity_id, encoded, time_ms)
            if framed is not None:
                read_copy = (layout.entity_field, framed[0], layout.offsets_field, framed[1])
        pairs = len(encoded) + len(read_copy) // 2
        args += (time_ms, id_rank(event.event_id), event.event_id, pairs)
        for pair in encoded.items():
            args += pair
        args += read_copy
        if event.HasField("vector"):
            args += ("1", pack_vector(event.vector.values))
        else:
            args.append("0")
    return script_keys, args


@dataclass(frozen=True, slots=True)
class StoredVector:
    entity_id: str
    version: Version
    values: bytes


class OnlineStore:
    """Redis access for one namespace: sync (consumer thread) and asyncio (gRPC) clients.

    `redis`: Redis as the dependency of the gRPC calls (`flywheel.common.dependency`): their
    reads and writes wait at most its budget within the caller's deadline, and Redis stalled
    or down is Unavailable naming it.
    `layouts` (entity type -> FramedLayout, see `framed.layouts_of`): the entity types whose rows
    get their read-ready copy; the others are written and read field by field only.
    `read_pipe`: the read script's own pipelined connection (see `script_pipe`); without
    one, reads go through the asyncio client."""

    def __init__(
        self, keys: KeySpace, sync_client, async_client,
        layouts: Mapping[str, FramedLayout] | None = None,
        read_pipe: ScriptPipe | None = None,
        *, redis: Dependency,
    ) -> None:
        self.keys = keys
        self._redis = redis
        self.layouts = dict(layouts or {})
        self._pipe = read_pipe
        self._sync = sync_client
        self._async = async_client
        self._write_sync = sync_client.register_script(WRITE_SCRIPT)
        self._write_async = async_client.register_script(WRITE_SCRIPT)
        self._read_async = async_client.register_script(READ_SCRIPT)

    def write(self, events: Sequence[events_pb2.Event]) -> list[int]:
        """Newer-wins write of validated events, one round trip; result bits per event."""
        if not events:
            return []
        script_keys, args = write_arguments(self.keys, events, self.layouts)
        return [int(x) for x in self._write_sync(keys=script_keys, args=args)]

    async def write_async(self, events: Sequence[events_pb2.Event]) -> list[int]:
        """`write` for a caller waiting on an answer (WriteFeatures): Unavailable when
        Redis is, in time, so that the caller knows to retry."""
        if not events:
            return []
        script_keys, args = write_arguments(self.keys, events, self.layouts)
        written = await self._redis.wait(self._write_async(keys=script_keys, args=args))
        return [int(x) for x in written]

    def read_arguments(self, entity_type: str, names: Sequence[str]) -> list:
        """ARGV of `read_entities` for these features of the entity type (build it once)."""
        prefix_bytes = len(self.keys.row_prefix(entity_type).encode())
        return read_arguments(self.layouts.get(entity_type), prefix_bytes, names)

    async def read_entities(self, row_keys: list[str], args: list) -> bytes:
        """The encoded `entities` field of a GetOnlineFeaturesResponse, one element per key
        (see READ_SCRIPT); `args` from `read_arguments`. Unavailable when Redis is, in time."""
        return await self._redis.wait(self._read_entities(row_keys, args))

    async def _read_entities(self, row_keys: list[str], args: list) -> bytes:
        if self._pipe is not None:
            try:
                return await self._pipe.call(row_keys, args)
            except NoScriptError:
                pass  # Redis restarted or flushed its scripts: redis-py loads it again
            except RedisConnectionError:
                pass  # a connection that was dropped while idle: once more, on a new one
        return await self._read_async(keys=row_keys, args=args)

    async def close(self) -> None:
        if self._pipe is not None:
            await self._pipe.aclose()

    async def ping(self) -> bool:
        return bool(await self._async.ping())

    def vectors(self, entity_type: str, batch: int = 1000) -> Iterator[StoredVector]:
        """Every stored vector of the entity type (SCAN, then pipelined reads)."""
        pattern = self.keys.vector_pattern(entity_type)
        found: list[bytes] = []
        for key in self._sync.scan_iter(match=pattern, count=batch):
            found.append(key)
            if len(found) >= batch:
                yield from self._read_vectors(entity_type, found)
                found = []
        if found:
            yield from self._read_vectors(entity_type, found)

    def _read_vectors(self, entity_type: str, keys: list[bytes]) -> Iterator[StoredVector]:
        pipe = self._sync.pipeline(transaction=False)
        for key in keys:
            pipe.hmget(key, ROW_TIME, ROW_RANK, ROW_EVENT_ID, VECTOR_VALUES)
        for key, (t, r, event_id, values) in zip(keys, pipe.execute(), strict=True):
            if t is None or values is None:
                continue
            entity_id = self.keys.entity_id_of_vector_key(entity_type, key.decode())
            yield StoredVector(entity_id, Version(int(t), int(r), event_id.decode()), values)
