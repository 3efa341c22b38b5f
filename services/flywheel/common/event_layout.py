"""Encoded events checked many at once, against the layout of one event already checked.

Producers send batches of events that look alike: one entity type, the same features in the
same order, values of the same encoded sizes. Such events differ only inside their ids,
times and values. A `Layout` is learned from one event the wire expression accepted
(`flywheel.common.event_wire`): for each of its bytes, the bits another event must share
with it (tags, lengths, names, continuation bits, the ASCII bit of strings), plus the values
that need a test of their own (doubles and floats finite, the event time not too far ahead,
nanos below one second). An event of the same size that agrees on those bits and passes
those tests has exactly that event's structure with valid values, so the expression would
accept it too; numpy runs the tests over a whole batch in a few passes instead of the regex
engine walking every byte of every event.

Like the expression, a layout has to be sound, never complete: an event no layout accepts
is screened the slow way, one by one. `LayoutScreen` keeps a few layouts per event size,
learned from the traffic itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from flywheel.common.event_wire import read_varint, seconds_ceiling, varint
from flywheel.common.validation import EntityRules

_NANOS_BOUND = 1_000_000_000
_LATEST_SECONDS = (1 << 35) - 1
# Bits of a byte that must equal the template's.
_ALL = 0xFF
_CONTINUATION = 0x80  # a varint byte with more to come (template bit set) or the last (clear)
_ASCII = 0x80  # a string byte: top bit clear, as in the template
_BOOL = 0xFE  # 0 or 1
_SECONDS_TOP = 0xF8  # the fifth byte of the seconds: 1 to 7 (non-zero is tested apart)
_TOP_OF_TENTH = 0xFE  # the tenth byte of a 64-bit varint: 0 or 1
_WORD = 8
# The first words of an event, compared alone first when a try has this many rows or more.
_HEAD_WORDS = 8
_HEAD_FILTER_FROM = 32


class Layout:
    """What one event's bytes fix for every event of the same layout; see the module doc."""

    __slots__ = (
        "_mask_words",
        "_nanos_least",
        "_nanos_mask",
        "_nanos_span",
        "_stride",
        "_template_words",
        "exponent_columns",
        "exponent_masks",
        "id_at",
        "id_size",
        "key_at",
        "key_size",
        "mask",
        "nanos_at",
        "nanos_size",
        "rules",
        "seconds_at",
        "size",
        "template",
    )

    def __init__(self, rules: EntityRules, event: bytes, mask: bytearray,
                 double_at: list[int], float_at: list[int], seconds_at: int,
                 nanos: tuple[int, int], key: tuple[int, int], event_id: tuple[int, int]) -> None:
        self.rules = rules
        self.size = len(event)
        self.template = event
        self.mask = bytes(mask)
        # The 16 bits holding each exponent, little-endian: bytes 6-7 of a double that must
        # be finite, bytes 2-3 of a float; all exponent bits set means NaN or infinity.
        at = [a for position in double_at + float_at for a in (position, position + 1)]
        self.exponent_columns = np.asarray(at, dtype=np.intp)
        self.exponent_masks = np.asarray(
            [0x7FF0] * len(double_at) + [0x7F80] * len(float_at), dtype=np.uint16
        )
        self.seconds_at = seconds_at
        self.nanos_at, self.nanos_size = nanos
        # A nanos varint of n bytes: its n bytes, the last of them not zero.
        top = 8 * max(self.nanos_size - 1, 0)
        self._nanos_mask = np.uint64((1 << (top + 8)) - 1)
        self._nanos_least = np.uint64(1 << top)
        most = _raw(_NANOS_BOUND - 1) if self.nanos_size == 5 else (1 << (top + 8)) - 1
        self._nanos_span = np.uint64(most - (1 << top))
        self.key_at, self.key_size = key
        # (-1, 0) when the event carries no id.
        self.id_at, self.id_size = event_id
        self._stride = 0

    def accepted(self, all_rows: np.ndarray, numbers: np.ndarray, now_s: float) -> np.ndarray:
        """Which of the rows `numbers` of `all_rows` are valid events of this layout. Rows:
        uint8, one event of this size per row from column 0, at least 8 bytes of slack after
        it, rows a multiple of 8 bytes long."""
        stride = all_rows.shape[1]
        if stride != self._stride:
            self._pad_to(stride)
        words = all_rows.view(np.uint64)
        template, mask = self._template_words, self._mask_words
        # A batch holds several layouts of one size, told apart mostly in their first bytes
        # (lengths of ids and names, the size of the nanos): those first, on every row left;
        # the whole structure and the values only on the rows that could be of this layout.
        if numbers.size >= _HEAD_FILTER_FROM:
            head = words[numbers, :_HEAD_WORDS]
            numbers = numbers[np.bitwise_or.reduce(
                (head ^ template[:_HEAD_WORDS]) & mask[:_HEAD_WORDS], axis=1) == 0]
            if numbers.size == 0:
                return numbers
        rows = words[numbers]
        ok = np.bitwise_or.reduce((rows ^ template) & mask, axis=1) == 0
        if not ok.all():
            numbers = numbers[ok]
            rows = rows[ok]
            if numbers.size == 0:
                return numbers
        return numbers[self._values_valid(rows.view(np.uint8), now_s)]

    def _values_valid(self, rows: np.ndarray, now_s: float) -> np.ndarray:
        """Per row of this layout's structure: its doubles and floats finite, its seconds
        within `max_future_s` of now, its nanos below one second."""
        seconds_span = _seconds_span(min(int(now_s + self.rules.max_future_s), _LATEST_SECONDS))
        if seconds_span is None:
            return np.zeros(rows.shape[0], dtype=bool)
        # With every continuation bit fixed by the mask, a varint's little-endian bytes
        # order as its value does: compare them as one integer. A range is one comparison:
        # below its start, the unsigned difference wraps around past any span.
        seconds = _column(rows, self.seconds_at) & _FIVE_BYTES
        ok = (seconds - _FIVE_BYTE_LEAST) <= seconds_span
        if self.exponent_columns.size:
            exponents = rows.take(self.exponent_columns, axis=1).view(np.uint16)
            ok &= ((exponents & self.exponent_masks) != self.exponent_masks).all(axis=1)
        if self.nanos_size:
            nanos = _column(rows, self.nanos_at) & self._nanos_mask
            ok &= (nanos - self._nanos_least) <= self._nanos_span
        return ok

    def _pad_to(self, stride: int) -> None:
        padding = bytes(stride - self.size)
        self._template_words = np.frombuffer(self.template + padding, np.uint64)
        self._mask_words = np.frombuffer(self.mask + padding, np.uint64)
        self._stride = stride


def _column(rows: np.ndarray, at: int) -> np.ndarray:
    """The eight bytes at column `at` of each row, as a little-endian integer."""
    return np.ndarray((rows.shape[0],), dtype="<u8", buffer=rows, offset=at,
                      strides=(rows.shape[1],))


def _raw(value: int) -> int:
    """A varint's bytes read as a little-endian integer."""
    return int.from_bytes(varint(value), "little")


# numpy scalars, so that comparisons with uint64 columns need no range check per call.
_FIVE_BYTES = np.uint64(0xFF_FFFF_FFFF)
_FIVE_BYTE_LEAST = np.uint64(1 << 32)  # a five-byte varint: the fifth byte is not zero
_latest_seen: list = [None, None]  # (latest second, its span) of the last call


def _seconds_span(latest: int) -> np.uint64 | None:
    """How far above the least five-byte varint the raw varint of `latest` lies (None
    before 1978, when no five-byte seconds can pass); one value per second, so kept from
    the last call."""
    if _latest_seen[0] != latest:
        _latest_seen[1] = (np.uint64(_raw(latest) - (1 << 32)) if latest >= 1 << 28 else None)
        _latest_seen[0] = latest
    return _latest_seen[1]


def learn(event: bytes, rules: EntityRules) -> Layout | None:
    """The layout of `event`, which `rules.encoded_event` fully matched (in the form that
    expression describes); None where the bytes are not in that form."""
    try:
        return _learn(event, rules)
    except (IndexError, ValueError):
        return None


def _learn(event: bytes, rules: EntityRules) -> Layout | None:
    mask = bytearray(b"\xff" * len(event))
    at = 0
    event_id = (-1, 0)
    if event[0] == 0x0A:
        size = event[1]
        event_id = (2, size)
        mask[2:2 + size] = bytes((_ASCII,)) * size
        at = 2 + size
    if event[at] != 0x12:
        return None
    size, at = read_varint(event, at + 1)
    at += size
    if event[at] != 0x1A:
        return None
    size = event[at + 1]
    key = (at + 2, size)
    mask[at + 2:at + 2 + size] = bytes((_ASCII,)) * size
    at += 2 + size
    if event[at] != 0x22 or event[at + 2] != 0x08:
        return None
    time_size = event[at + 1]
    seconds_at = at + 3
    _varint_mask(mask, seconds_at, 5)
    mask[seconds_at + 4] = _SECONDS_TOP
    nanos = (0, 0)
    if time_size != 6:
        if event[at + 8] != 0x10:
            return None
        nanos = (at + 9, time_size - 7)
        _varint_mask(mask, *nanos)
    at += 2 + time_size
    double_at: list[int] = []
    while at < len(event) and event[at] == 0x2A:
        size, entry = read_varint(event, at + 1)
        end = entry + size
        if event[entry] != 0x0A:
            return None
        name_size = event[entry + 1]
        name = event[entry + 2:entry + 2 + name_size].decode()
        value = entry + 2 + name_size
        if event[value] != 0x12:
            return None
        value_size, value = read_varint(event, value + 1)
        kind, payload = event[value], value + 1
        if kind == 0x09:  # double
            mask[payload:payload + 8] = bytes(8)
            if name in rules.finite_required:
                double_at.append(payload + 6)
        elif kind == 0x10:  # int64
            _varint_mask(mask, payload, value_size - 1)
            if value_size - 1 == 10:
                mask[payload + 9] = _TOP_OF_TENTH
        elif kind == 0x18:  # bool
            mask[payload] = _BOOL
        elif kind == 0x22:  # string
            size = event[payload]
            mask[payload + 1:payload + 1 + size] = bytes((_ASCII,)) * size
        else:
            return None
        at = end
    float_at: list[int] = []
    if at < len(event) and event[at] == 0x32:
        size, inner = read_varint(event, at + 1)
        end = inner + size
        if event[inner] != 0x0A:
            return None
        size, floats = read_varint(event, inner + 1)
        mask[floats:floats + size] = bytes(size)
        float_at = list(range(floats + 2, floats + size, 4))
        at = end
    if at != len(event):
        return None
    return Layout(rules, event, mask, double_at, float_at, seconds_at, nanos, key, event_id)


def _varint_mask(mask: bytearray, at: int, size: int) -> None:
    """Only the continuation bits of a varint's bytes are fixed (set but in the last)."""
    mask[at:at + size] = bytes((_CONTINUATION,)) * size


class LayoutScreen:
    """Layouts learned from the traffic, a few per event size, tried on each batch."""

    def __init__(
        self,
        rules: Sequence[EntityRules],
        *,
        min_group: int = 8,
        layouts_per_size: int = 8,
        max_sizes: int = 512,
        learn_per_group: int = 2,
    ) -> None:
        self._rules = list(rules)
        self._min_group = min_group
        self._layouts_per_size = layouts_per_size
        self._max_sizes = max_sizes
        self._learn_per_group = learn_per_group
        self._by_size: dict[int, list[Layout]] = {}

    def screen(
        self, message: bytes, spans: Sequence[tuple[int, int]], now_s: float
    ) -> list[Layout | None]:
        """Per span of `message`, the layout that accepted its event, or None: screen that
        one the slow way."""
        accepted: list[Layout | None] = [None] * len(spans)
        if len(spans) < self._min_group:
            return accepted
        bounds = np.fromiter(chain.from_iterable(spans), dtype=np.intp, count=2 * len(spans))
        starts = bounds[0::2]
        sizes = bounds[1::2] - starts
        # One row per event, all as long as the longest plus a word of slack, whole words,
        # gathered in one indexing of the windows over the message.
        stride = (int(sizes.max()) // _WORD + 2) * _WORD
        padded = np.frombuffer(message + bytes(stride), np.uint8)
        all_rows = sliding_window_view(padded, stride)[starts]
        values, counts = np.unique(sizes, return_counts=True)
        for size, count in zip(values.tolist(), counts.tolist(), strict=True):
            if count >= self._min_group:
                numbers = np.flatnonzero(sizes == size)
                self._screen_group(message, all_rows, spans, size, numbers, now_s, accepted)
        return accepted

    def _screen_group(self, message: bytes, all_rows: np.ndarray,
                      spans: Sequence[tuple[int, int]], size: int, numbers: np.ndarray,
                      now_s: float, accepted: list[Layout | None]) -> None:
        known = self._by_size.get(size, [])
        candidates = list(known)
        attempts = 0
        pending = numbers
        open_rows = np.ones(all_rows.shape[0], dtype=bool)
        # A few stragglers go the slow way: the regex costs them less than another try, and
        # a layout learned from them would mostly cost a try on every later batch.
        while pending.size >= self._min_group:
            if candidates:
                layout: Layout | None = candidates.pop(0)
            elif attempts < self._learn_per_group:
                attempts += 1
                start, end = spans[int(pending[0])]
                layout = self._learn(message[start:end], now_s)
                if layout is None:
                    pending = pending[1:]  # that one goes the slow way
                    continue
                self._keep(size, layout)
            else:
                return
            assert layout is not None
            numbers = layout.accepted(all_rows, pending, now_s)
            if numbers.size:
                for number in numbers.tolist():
                    accepted[number] = layout
                if layout in known and known[0] is not layout:
                    known.remove(layout)
                    known.insert(0, layout)  # the most useful first
                open_rows[numbers] = False
                pending = pending[open_rows[pending]]

    def _learn(self, event: bytes, now_s: float) -> Layout | None:
        for rules in self._rules:
            match = rules.encoded_event.fullmatch(event)
            if match is not None:
                # A template too far ahead would still teach a fine layout, but the one
                # that teaches must itself be valid now: keep the rule simple.
                ceiling = seconds_ceiling(now_s + rules.max_future_s)
                if match["seconds"][::-1] > ceiling:
                    return None
                return learn(event, rules)
        return None

    def _keep(self, size: int, layout: Layout) -> None:
        known = self._by_size.get(size)
        if known is None:
            if len(self._by_size) >= self._max_sizes:
                self._by_size.pop(next(iter(self._by_size)))
            known = self._by_size[size] = []
        # Last, in place of the layout that went longest without a hit: it moves forward
        # when it proves useful, so a rare layout is not tried first on every batch.
        del known[self._layouts_per_size - 1:]
        known.append(layout)
