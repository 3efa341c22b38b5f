"""`flywheel.v1.Event` matched on the wire, without decoding it.

Ingest receives events as bytes and publishes bytes; decoding each event into a message and
encoding it again costs more than everything else it does. Instead, one regular expression per
entity type recognizes, in C, the encoding of an event that is certainly valid, in the form
every protobuf library writes (fields in number order, each once):

    1 event_id     absent, or 1-127 ASCII characters
    2 entity_type  the entity type's name
    3 entity_id    1-127 ASCII characters            (group "key", length byte included)
    4 event_time   seconds in [2**28, 2**35), nanos in [1, 1e9) or absent
                                                     (group "seconds": the five varint bytes)
    5 features     map entries, each a known feature holding one value of its dtype, doubles
                   finite where the spec says so, strings of at most 127 ASCII bytes
    6 vector       absent, or the entity's dimension of finite floats, packed

Every length byte is tied to what it measures, so a match decodes to exactly the event that was
checked; ASCII strings are valid UTF-8. The one check left to the caller is the event time
against "now" (`seconds_ceiling`, `seconds_within`). Anything not matched, valid or not, is
for the decoder and the field-by-field walk, which alone write problems: the expression has to
be sound, never complete.
"""

from __future__ import annotations

import re
from collections import defaultdict

from flywheel.common.spec import Dtype, EntitySpec

MAX_FAST_STRING = 127

# Eight little-endian bytes of a finite double: the exponent (top 11 bits) is not all ones.
_FINITE_DOUBLE = rb".{6}(?:[\x00-\xef].|[\xf0-\xff][\x00-\x7e\x80-\xfe])"
# Four little-endian bytes of a finite float: the exponent (bits 23-30) is not all ones.
_FINITE_FLOAT = rb"..(?:[\x00-\x7f].|[\x80-\xff][\x00-\x7e\x80-\xfe])"
# Event.event_time.seconds as a five-byte varint: 1978-07-05 up to year 3058.
_SECONDS = rb"[\x80-\xff]{4}[\x01-\x07]"


_SMALL_VARINTS = [bytes((n,)) for n in range(128)]


def varint(n: int) -> bytes:
    """The base-128 varint encoding of an int64 or uint64, as protobuf writes it: a negative
    number takes ten bytes, its 64-bit two's complement. The project's one varint encoder
    (event screening, the feature store's replies, the inference answers)."""
    if n < 0:
        n += 1 << 64
    elif n < 0x80:
        return _SMALL_VARINTS[n]
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _literal(data: bytes) -> bytes:
    return re.escape(data)


def _ascii(lengths: range) -> bytes:
    """A length-prefixed ASCII string of one of `lengths`; the prefix is literal per length,
    so the regex engine skips a wrong length at its first byte."""
    return b"(?:" + b"|".join(
        _literal(varint(n)) + rb"[\x00-\x7f]{%d}" % n for n in lengths
    ) + b")"


def varints_below(bound: int) -> dict[int, bytes]:
    """Per encoded size, a regex of the shortest varints of the values in [1, bound)."""
    out: dict[int, bytes] = {}
    size = 1
    while 1 << (7 * (size - 1)) < bound:
        top = size - 1
        if bound >= 1 << (7 * size):
            out[size] = rb"[\x80-\xff]" * top + rb"[\x01-\x7f]"
        else:
            # Below `bound`: the same digits down to some position, a smaller digit there,
            # anything under it. The top digit is never zero (shortest encoding).
            digits = [(bound >> (7 * i)) & 0x7F for i in range(size)]
            alternatives = []
            for at in range(top, -1, -1):
                smallest = 1 if at == top else 0
                if digits[at] > smallest:
                    flag = 0 if at == top else 0x80
                    low, high = bytes((flag | smallest,)), bytes((flag | digits[at] - 1,))
                    above = bytes(digits[i] | (0 if i == top else 0x80) for i in range(at + 1, size))
                    alternatives.append(
                        rb"[\x80-\xff]" * at + b"[" + _literal(low) + b"-" + _literal(high) + b"]"
                        + _literal(above)
                    )
            out[size] = b"(?:" + b"|".join(alternatives) + b")"
        size += 1
    return out


def _value_alternatives(dtype: Dtype, finite: bool) -> list[tuple[int, bytes]]:
    """(encoded size, regex) of each form of a FeatureValue holding one value of `dtype`,
    its field-2 tag and length within the map entry included."""
    if dtype is Dtype.DOUBLE:
        return [(11, rb"\x12\x09\x09" + (_FINITE_DOUBLE if finite else rb".{8}"))]
    if dtype is Dtype.BOOL:
        return [(4, rb"\x12\x02\x18[\x00\x01]")]
    if dtype is Dtype.INT64:
        return [
            (3 + size, _literal(b"\x12" + varint(1 + size) + b"\x10")
             + rb"[\x80-\xff]{%d}" % (size - 1) + (rb"[\x00-\x01]" if size == 10 else rb"[\x00-\x7f]"))
            for size in range(1, 11)
        ]
    return [_string_value(length) for length in range(MAX_FAST_STRING + 1)]


def _string_value(length: int) -> tuple[int, bytes]:
    inner = b"\x22" + varint(length)
    outer = b"\x12" + varint(len(inner) + length)
    return (len(outer) + len(inner) + length,
            _literal(outer + inner) + rb"[\x00-\x7f]{%d}" % length)


def _names(names: list[bytes]) -> bytes:
    """Equally long names as a trie: the engine tries one byte per branch, and branches
    that differ only in their first byte become one character class."""
    if len(names[0]) == 0:
        return b""
    tails: dict[bytes, list[bytes]] = defaultdict(list)
    for name in set(names):
        tails[name[:1]].append(name[1:])
    firsts_by_rest: dict[bytes, list[bytes]] = defaultdict(list)
    for first, rests in sorted(tails.items()):
        firsts_by_rest[_names(rests)].append(first)
    branches = [
        (_literal(firsts[0]) if len(firsts) == 1
         else b"[" + b"".join(_literal(first) for first in firsts) + b"]") + rest
        for rest, firsts in firsts_by_rest.items()
    ]
    return branches[0] if len(branches) == 1 else b"(?:" + b"|".join(branches) + b")"


def features_pattern(entity: EntitySpec) -> bytes:
    """Regex source of any number of Event.features map entries of `entity`, each tied to its
    lengths; the largest group of features (same dtype and name length) is tried first."""
    groups: dict[tuple[Dtype, bool, int], list[bytes]] = defaultdict(list)
    for feature in entity.features:
        finite = feature.dtype is Dtype.DOUBLE and not feature.allow_nan
        name = feature.name.encode()
        groups[(feature.dtype, finite, len(name))].append(name)
    alternatives = []
    for (dtype, finite, name_size), names in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        key = b"\x0a" + varint(name_size)
        for value_size, value in _value_alternatives(dtype, finite):
            entry_size = len(key) + name_size + value_size
            alternatives.append(_literal(varint(entry_size) + key) + _names(names) + value)
    return rb"(?:\x2a(?:" + b"|".join(alternatives) + rb"))*+"


def _time_pattern() -> bytes:
    """Event.event_time with its length byte tied to whether and how long nanos is."""
    nanos = varints_below(1_000_000_000)
    lengths = [rb"\x06(?=.{6}(?!\x10))"] + [
        _literal(varint(7 + size)) + rb"(?=.{6}\x10" + pattern + b")"
        for size, pattern in nanos.items()
    ]
    any_nanos = b"(?:" + b"|".join(nanos.values()) + b")"
    return (rb"\x22(?:" + b"|".join(lengths) + rb")\x08(?P<seconds>" + _SECONDS + rb")"
            + rb"(?:\x10" + any_nanos + rb")?")


def _vector_pattern(entity: EntitySpec) -> bytes:
    if entity.vector is None:
        return b""
    size = 4 * entity.vector.dimension
    packed = b"\x0a" + varint(size)
    return (_literal(b"\x32" + varint(len(packed) + size) + packed)
            + rb"(?:" + _FINITE_FLOAT + rb"){%d}" % entity.vector.dimension).join((b"(?:", b")?"))


def event_pattern(entity: EntitySpec) -> re.Pattern[bytes]:
    """The expression of a certainly valid event of `entity` (see the module's docstring);
    use `fullmatch` over exactly the event's bytes."""
    name = entity.name.encode()
    return re.compile(
        rb"(?:\x0a" + _ascii(range(1, MAX_FAST_STRING + 1)) + rb")?"
        + _literal(b"\x12" + varint(len(name)) + name)
        + rb"\x1a(?P<key>" + _ascii(range(1, MAX_FAST_STRING + 1)) + rb")"
        + _time_pattern()
        + features_pattern(entity)
        + _vector_pattern(entity),
        re.DOTALL,
    )


def seconds_ceiling(latest_s: float) -> bytes:
    """What `seconds_within` compares a match's "seconds" group to: event times up to
    `latest_s` pass."""
    latest = min(int(latest_s), (1 << 35) - 1)
    if latest < 1 << 28:
        return b""  # no five-byte time passes
    return varint(latest)[::-1]


def seconds_within(seconds: bytes, ceiling: bytes) -> bool:
    """Whether five varint bytes of seconds are at most the ceiling's time. Reversed, the
    most significant digit comes first and every lower byte has its top bit set, so byte
    order is numeric order."""
    return seconds[::-1] <= ceiling


def split_repeated(message: bytes, field: int = 1) -> list[tuple[int, int]]:
    """(start, end) of each occurrence of a length-delimited `field` in an encoded message;
    other fields are skipped as a decoder would. ValueError when the encoding is broken."""
    tag = field << 3 | 2
    if tag >= 0x80:
        raise ValueError("only fields 1-15 are split")
    spans: list[tuple[int, int]] = []
    append = spans.append
    at, size = 0, len(message)
    try:
        while at < size:
            # The field with a length of one or two bytes (under 16 KiB) comes first: that is
            # every event. A field running past the end leaves `at` past it: checked once below.
            if message[at] == tag:
                first = message[at + 1]
                if first < 0x80:
                    at += 2 + first
                    append((at - first, at))
                    continue
                second = message[at + 2]
                if second < 0x80:
                    start = at + 3
                    at = start + (first & 0x7F | second << 7)
                    append((start, at))
                    continue
            key, at = read_varint(message, at)
            if key >> 3 == 0 or key & 7 not in (0, 1, 2, 5):
                raise ValueError(f"unsupported field key {key} at byte {at}")
            if key & 7 == 0:
                at = read_varint(message, at)[1]
                continue
            if key & 7 != 2:
                at += 8 if key & 7 == 1 else 4
                continue
            length, start = read_varint(message, at)
            at = start + length
            if key == tag:
                append((start, at))
    except IndexError:
        raise ValueError("the message ends inside a field") from None
    if at > size:
        raise ValueError("a field runs past the end of the message")
    return spans


def read_varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    for position in range(at, min(at + 10, len(data))):
        byte = data[position]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position + 1
        shift += 7
    if at + 10 > len(data):
        raise IndexError
    raise ValueError(f"a varint longer than ten bytes at byte {at}")
