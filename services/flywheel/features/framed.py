"""The read-ready copy of a feature row, and the read script that serves GetOnlineFeatures.

Encoding a reply at read time from the per-feature fields of a row costs an HMGET of every
feature inside Redis (most of the time of a read) and the framing of every value. So every
row also holds two fields written by the same HSET as its per-feature fields (so replaced
with them, under the same newer-wins rule):

- the encoded entity (`keys.framed_fields`[0]): the whole `entities` element of an encoded
  GetOnlineFeaturesResponse for the row, with every feature of the entity type in the spec's
  order: tag and length, entity id, status FOUND, one `values` element per feature (an empty
  FeatureValue for a feature the event does not carry), event time;
- its offsets (`keys.framed_fields`[1]): N + 2 big-endian uint16, the 0-based positions in
  the encoded entity of the entity id field, of each of the N values, and of the event time.

Both field names carry a digest of the feature order, so after a spec change a row written
under the old order is simply not found there and is read field by field.

READ_SCRIPT answers ONE string, the `entities` field of the reply, so the client parses one
bulk string and the server only prepends the feature names: a request for every feature in
the spec's order appends each stored element as it is (one HGET per entity); any other list
cuts runs of consecutive features out of it with the offsets (one HMGET of the two fields); a
row without them (written before they existed, under another order, or too long for two-byte
offsets) is read field by field and encoded in the script. `flywheel.features.wire` is the
python reference of the encoding.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from flywheel.common.spec import EntitySpec
from flywheel.features import wire
from flywheel.features.keys import framed_fields

# Encoded entities longer than this are not stored (their offsets are two bytes each).
MAX_ENCODED_ENTITY = 0xFFFF

_EMPTY_VALUE = wire.empty_values(1)
_VALUE_HEADS = [wire.VALUES_TAG + wire.varint(n) for n in range(128)]  # tag, 1-byte length


@dataclass(frozen=True, slots=True)
class FramedLayout:
    """The read-ready copy of one entity type's rows: its features in the spec's order."""

    names: tuple[str, ...]
    entity_field: str
    offsets_field: str
    positions: dict[str, int]  # feature name -> 1-based position in `names`


def layout_of(feature_names: Sequence[str]) -> FramedLayout:
    names = tuple(feature_names)
    entity_field, offsets_field = framed_fields(names)
    return FramedLayout(
        names, entity_field, offsets_field, {n: i for i, n in enumerate(names, start=1)}
    )


def layouts_of(entities: Iterable[EntitySpec]) -> dict[str, FramedLayout]:
    return {entity.name: layout_of(entity.feature_names) for entity in entities}


def encoded_entity(
    layout: FramedLayout, entity_id: str, values: Mapping[str, bytes], time_ms: int
) -> tuple[bytes, bytes] | None:
    """(encoded entity, offsets) of a row: `values` maps feature names to their FeatureValue
    encodings. None when the encoded entity would be longer than MAX_ENCODED_ENTITY. The
    bytes are `wire.found_entity`'s (checked by tests/unit/features/test_wire.py), built
    inline: this runs for every event written."""
    heads = _VALUE_HEADS
    framed = []
    starts = []
    position = 0
    for name in layout.names:
        value = values.get(name)
        if value is None:
            piece = _EMPTY_VALUE
        elif len(value) < 128:
            piece = heads[len(value)] + value
        else:
            piece = wire.frame_value(value)
        starts.append(position)
        framed.append(piece)
        position += len(piece)
    starts.append(position)
    id_field = wire.entity_id_field(entity_id)
    body = b"".join((id_field, wire.STATUS_FOUND, *framed, wire.timestamp_field(time_ms)))
    element = wire.ENTITIES_TAG + wire.varint(len(body)) + body
    if len(element) > MAX_ENCODED_ENTITY:
        return None
    id_start = len(element) - len(body)
    values_start = id_start + len(id_field) + len(wire.STATUS_FOUND)
    offsets = [id_start] + [values_start + start for start in starts]
    return element, struct.pack(f">{len(offsets)}H", *offsets)


def read_arguments(layout: FramedLayout | None, prefix_bytes: int, names: Sequence[str]) -> list:
    """ARGV of READ_SCRIPT for these feature names of an entity type, encoded."""
    if layout is None or any(name not in layout.positions for name in names):
        head: list = ["", "", prefix_bytes, 0, len(names), 0]
    elif tuple(names) == layout.names:
        head = [layout.entity_field, "", prefix_bytes, len(layout.names), len(names), 0]
    else:
        runs: list[list[int]] = []
        for name in names:
            position = layout.positions[name]
            if runs and runs[-1][1] + 1 == position:
                runs[-1][1] = position
            else:
                runs.append([position, position])
        head = [layout.entity_field, layout.offsets_field, prefix_bytes, len(layout.names),
                len(names), len(runs)]
        head += (bound for run in runs for bound in run)
    return [str(a).encode() for a in head] + [",".join(names).encode()]


# KEYS: row keys, each the row prefix then the entity id.
# ARGV: the encoded-entity field ('' when the entity type has none); the offsets field ('' when
# the request is every feature in the spec's order: the element is served as stored); the byte
# length of the row prefix; N, the features of the layout; n, the features requested; R; R
# runs (first, last: 1-based positions in the layout of requested features that follow each
# other there, in request order); the requested feature names joined by ',' (names hold no
# ','). Few arguments, since the client encodes each of them on every call; the field-by-field
# arguments are built only when a row needs them.
# Returns the `entities` field of the encoded GetOnlineFeaturesResponse: one element per key,
# in KEYS order. Numbers are doubles in Lua 5.1, exact for integers below 2^53: varints by
# floor division; event times (ms) fit.
READ_SCRIPT = """
local concat, char, sub, byte, floor = table.concat, string.char, string.sub, string.byte, math.floor
local call = redis.call

local function varint(m)
  if m < 128 then return char(m) end
  local p = {}
  while m >= 128 do
    p[#p + 1] = m % 128 + 128
    m = floor(m / 128)
  end
  p[#p + 1] = m
  return char(unpack(p))
end

local heads = {}
local function head(len)
  local h = '\\26' .. varint(len)
  heads[len] = h
  return h
end

local function stamp(t)
  local s = floor(t / 1000)
  local ms = t - s * 1000
  local body = '\\8' .. varint(s)
  if ms > 0 then body = body .. '\\16' .. varint(ms * 1000000) end
  return '\\34' .. char(#body) .. body
end

-- 1-based position in the encoded entity of offset i (1: the entity id field, 1 + j: value
-- j, N + 2: the event time).
local function at(offsets, i)
  local a, b = byte(offsets, 2 * i - 1, 2 * i)
  return a * 256 + b + 1
end

local efield, ofield = ARGV[1], ARGV[2]
local plen = tonumber(ARGV[3])
local last = tonumber(ARGV[4])
local n = tonumber(ARGV[5])
local nruns = tonumber(ARGV[6])
local runs = {}
for i = 1, 2 * nruns do runs[i] = tonumber(ARGV[6 + i]) end
local whole = efield ~= '' and ofield == ''
local tail_in_last_run = nruns > 0 and runs[2 * nruns] == last
local hmget, no_values

local out = {}
local k = 0
for _, key in ipairs(KEYS) do
  local e, o
  if whole then
    e = call('HGET', key, efield)
  elseif efield ~= '' then
    local got = call('HMGET', key, efield, ofield)
    e, o = got[1], got[2]
  end
  if e and whole then
    k = k + 1
    out[k] = e
  else
    local start = k
    local size = 0
    k = k + 2
    if e and o then
      local piece = sub(e, at(o, 1), at(o, 2) - 1)
      k = k + 1
      out[k] = piece
      size = size + #piece
      for r = 1, 2 * nruns, 2 do
        if r == 2 * nruns - 1 and tail_in_last_run then
          piece = sub(e, at(o, runs[r] + 1))
        else
          piece = sub(e, at(o, runs[r] + 1), at(o, runs[r + 1] + 2) - 1)
        end
        k = k + 1
        out[k] = piece
        size = size + #piece
      end
      if not tail_in_last_run then
        piece = sub(e, at(o, last + 2))
        k = k + 1
        out[k] = piece
        size = size + #piece
      end
    else
      if not hmget then
        hmget = {'HMGET', false, '@t'}
        for name in string.gmatch(ARGV[#ARGV], '[^,]+') do hmget[#hmget + 1] = name end
      end
      hmget[2] = key
      local values = call(unpack(hmget))
      local t = values[1]
      local id = sub(key, plen + 1)
      local idl = varint(#id)
      out[k + 1] = '\\10'
      out[k + 2] = idl
      out[k + 3] = id
      k = k + 4
      size = size + 1 + #idl + #id + 2
      if t then
        out[k] = '\\16\\1'
        for j = 2, n + 1 do
          local v = values[j]
          if v then
            local len = #v
            local h = heads[len] or head(len)
            out[k + 1] = h
            out[k + 2] = v
            k = k + 2
            size = size + #h + len
          else
            k = k + 1
            out[k] = '\\26\\0'
            size = size + 2
          end
        end
        local piece = stamp(tonumber(t))
        k = k + 1
        out[k] = piece
        size = size + #piece
      else
        out[k] = '\\16\\2'
        no_values = no_values or string.rep('\\26\\0', n)
        k = k + 1
        out[k] = no_values
        size = size + 2 * n
      end
    end
    out[start + 1] = '\\18'
    out[start + 2] = varint(size)
  end
end
return concat(out)
"""
