"""Encoded events checked many at once, against the layouts of events already checked.

Producers send batches of events that look alike: one entity type, the same features in the
same order, values of the same encoded sizes. Such events differ only inside their ids,
times and values. Layouts are learned from one event the wire expression accepted
(`flywheel.common.event_wire`), in two parts: its head (event id, entity type, entity id,
event time) and its body (the features and the vector). For each byte of a part, a `Layout`
holds the bits another event's part must share with it (tags, lengths, names, continuation
bits, the ASCII bit of strings), plus the values that need a test of their own (doubles and
floats finite, the event time not too far ahead, nanos below one second). A part of the
same size that agrees on those bits and passes those tests has exactly that part's
structure with valid values; an event whose head and body both pass, each against a layout
of its entity type, is one the expression would accept. numpy runs the tests over a whole
batch in a few passes instead of the regex engine walking every byte of every event.

Heads and bodies vary apart (ids and times of different lengths; counts and strings of
different sizes), so two short lists of parts cover what would be their product in whole
events. Where the body starts is read from each event's length bytes, which its head
layout then checks.

Like the expression, a layout has to be sound, never complete: an event no layout accepts
is screened the slow way, one by one. `LayoutScreen` keeps a few layouts per part size,
learned from the traffic itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
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
# The first words of a part, compared alone first when a try has this many rows or more.
_LEADING_WORDS = 8
_LEADING_FILTER_FROM = 32
# Bytes gathered for the heads: room for ids of 64 characters each beside a long entity type
# name. An event with a longer head is screened the slow way.
_HEAD_WIDTH = 192


class Layout:
    """What one event's head or body fixes for every head or body of the same layout; see
    the module doc."""

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
        "structure",
        "template",
    )

    def __init__(self, rules: EntityRules, part: bytes, mask: bytes | bytearray,
                 double_at: list[int], float_at: list[int], seconds_at: int | None,
                 nanos: tuple[int, int], key: tuple[int, int], event_id: tuple[int, int]) -> None:
        self.rules = rules
        self.size = len(part)
        self.template = part
        self.mask = bytes(mask)
        # What makes two layouts the same: their rules, fixed bits and where they are.
        self.structure = (id(rules), self.mask, bytes(t & m for t, m in zip(part, self.mask)))
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

    def accepted(self, all_rows: np.ndarray, numbers: np.ndarray, now_s: float,
                 few_expected: bool = True) -> np.ndarray:
        """Which of the rows `numbers` of `all_rows` hold a valid part of this layout. Rows:
        uint8, one part of this size per row from column 0, at least 8 bytes of slack after
        it, rows a multiple of 8 bytes long. `few_expected`: most rows are likely of other
        layouts."""
        stride = all_rows.shape[1]
        if stride != self._stride:
            self._pad_to(stride)
        words = all_rows.view(np.uint64)
        template, mask = self._template_words, self._mask_words
        # A batch holds several layouts of one size, told apart mostly in their first bytes
        # (lengths of ids, names and strings, the size of the nanos): those first, on every
        # row left; the whole structure and the values only on the rows that could fit.
        if few_expected and numbers.size >= _LEADING_FILTER_FROM:
            leading = words[numbers, :_LEADING_WORDS]
            numbers = numbers[np.bitwise_or.reduce(
                (leading ^ template[:_LEADING_WORDS]) & mask[:_LEADING_WORDS], axis=1) == 0]
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
        """Per row of this layout's structure: a head's seconds within `max_future_s` of
        now and nanos below one second; a body's doubles and floats finite."""
        if self.seconds_at is None:  # a body
            exponents = rows.take(self.exponent_columns, axis=1).view(np.uint16)
            return ((exponents & self.exponent_masks) != self.exponent_masks).all(axis=1)
        seconds_span = _seconds_span(min(int(now_s + self.rules.max_future_s), _LATEST_SECONDS))
        if seconds_span is None:
            return np.zeros(rows.shape[0], dtype=bool)
        # With every continuation bit fixed by the mask, a varint's little-endian bytes
        # order as its value does: compare them as one integer. A range is one comparison:
        # below its start, the unsigned difference wraps around past any span.
        seconds = _column(rows, self.seconds_at) & _FIVE_BYTES
        ok = (seconds - _FIVE_BYTE_LEAST) <= seconds_span
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


@lru_cache(maxsize=4)
def _seconds_span(latest: int) -> np.uint64 | None:
    """How far above the least five-byte varint the raw varint of `latest` lies (None
    before 1978, when no five-byte seconds can pass); the same for a whole second, so kept."""
    return np.uint64(_raw(latest) - (1 << 32)) if latest >= 1 << 28 else None


def learn(event: bytes, rules: EntityRules) -> tuple[Layout, Layout] | None:
    """The layouts of the head and body of `event`, which `rules.encoded_event` fully
    matched (in the form that expression describes); None where the bytes are not in that
    form."""
    try:
        return _learn(event, rules)
    except (IndexError, ValueError):
        return None


def _learn(event: bytes, rules: EntityRules) -> tuple[Layout, Layout] | None:
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
    body_at = at
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
    head = Layout(rules, event[:body_at], mask[:body_at], [], [], seconds_at, nanos, key,
                  event_id)
    body = Layout(rules, event[body_at:], mask[body_at:], [d - body_at for d in double_at],
                  [f - body_at for f in float_at], None, (0, 0), (0, 0), (-1, 0))
    return head, body


def body_offsets(rows: np.ndarray) -> np.ndarray:
    """Per row (uint8, an event from column 0), where its body would start if its head is
    in the encoders' form: [event id,] entity type, entity id, event time, each a tag and a
    one-byte length. Only a hint: a head layout of that size checks it, so any bytes may
    come in (the offsets stay inside the rows)."""
    count, stride = rows.shape
    index = np.arange(count)
    limit = stride - 2
    at = np.where(rows[:, 0] == 0x0A, rows[:, 1].astype(np.intp) + 2, 0)
    for _ in range(3):  # entity type, entity id, event time
        at = np.minimum(at, limit)
        at = at + 2 + rows[index, at + 1]
    return at


def _varint_mask(mask: bytearray, at: int, size: int) -> None:
    """Only the continuation bits of a varint's bytes are fixed (set but in the last)."""
    mask[at:at + size] = bytes((_CONTINUATION,)) * size


class LayoutScreen:
    """Head and body layouts learned from the traffic, a few per part size, tried on each
    batch."""

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
        self._rules_index = {id(r): i for i, r in enumerate(self._rules)}
        self._heads: dict[int, list[Layout]] = {}
        self._bodies: dict[int, list[Layout]] = {}

    def screen(
        self, message: bytes, spans: Sequence[tuple[int, int]], now_s: float
    ) -> list[Layout | None]:
        """Per span of `message`, the head layout of its event when its head and body were
        accepted, or None: screen that one the slow way."""
        count = len(spans)
        accepted: list[Layout | None] = [None] * count
        if count < self._min_group:
            return accepted
        bounds = np.fromiter(chain.from_iterable(spans), dtype=np.intp, count=2 * count)
        starts = bounds[0::2]
        sizes = bounds[1::2] - starts
        # Rows gathered in one indexing of the windows over the message: first the heads'
        # bytes, then from where each body starts, as long as the longest body plus a word
        # of slack, in whole words.
        padded = np.frombuffer(message + bytes(int(sizes.max()) + 2 * _HEAD_WIDTH), np.uint8)
        head_rows = sliding_window_view(padded, _HEAD_WIDTH)[starts]
        body_at = body_offsets(head_rows)
        body_at[body_at > sizes] = -1

        def learned_head(number: int) -> Layout | None:
            parts = self._learn(message, spans[number], now_s)
            return parts[0] if parts else None

        used: list[Layout] = []
        head_of = np.full(count, -1, dtype=np.intp)  # index in `used`
        for size in _sizes_of_groups(body_at, self._min_group):
            width = (size // _WORD + 2) * _WORD
            if width > _HEAD_WIDTH:
                continue
            self._screen_group(self._heads, size, head_rows[:, :width],
                               np.flatnonzero(body_at == size), now_s, used, head_of,
                               learned_head)
        with_head = np.flatnonzero(head_of >= 0)
        if with_head.size < self._min_group:
            return accepted
        body_sizes = sizes[with_head] - body_at[with_head]
        body_stride = (int(body_sizes.max()) // _WORD + 2) * _WORD
        body_rows = sliding_window_view(padded, body_stride)[starts[with_head] + body_at[with_head]]

        def learned_body(local: int) -> Layout | None:
            parts = self._learn(message, spans[int(with_head[local])], now_s)
            return parts[1] if parts else None

        body_of = np.full(with_head.size, -1, dtype=np.intp)
        for size in _sizes_of_groups(body_sizes, self._min_group):
            self._screen_group(self._bodies, size, body_rows, np.flatnonzero(body_sizes == size),
                               now_s, used, body_of, learned_body)
        # Both parts of the event's entity type: the head fixes the type's name.
        rules_of = np.asarray([self._rules_index[id(layout.rules)] for layout in used] + [-1],
                              dtype=np.intp)
        heads = head_of[with_head]
        both = rules_of[body_of] == rules_of[heads]
        for number, head in zip(with_head[both].tolist(), heads[both].tolist(), strict=True):
            accepted[number] = used[head]
        return accepted

    def _screen_group(self, by_size: dict[int, list[Layout]], size: int, rows: np.ndarray,
                      numbers: np.ndarray, now_s: float, used: list[Layout],
                      found: np.ndarray, learned: Callable[[int], Layout | None]) -> None:
        """Tries the layouts of parts of `size` on the rows `numbers` (parts from column 0),
        learning new ones from rows none accepts; a layout that accepts rows is appended to
        `used`, and `found` holds its index there for those rows."""
        known = by_size.get(size, [])
        candidates = list(known)
        attempts = tried = 0
        pending = numbers
        # A few stragglers go the slow way: the regex costs them less than another try, and
        # a layout learned from them would mostly cost a try on every later batch.
        while pending.size >= self._min_group:
            if candidates:
                layout: Layout | None = candidates.pop(0)
            elif attempts < self._learn_per_group:
                attempts += 1
                layout = learned(int(pending[0]))
                if layout is None or layout.size != size:
                    pending = pending[1:]  # that one goes the slow way
                    continue
                known = by_size.get(size, [])
            else:
                return
            assert layout is not None
            # The first layout tried, the most useful of late, likely fits most rows.
            numbers = layout.accepted(rows, pending, now_s, few_expected=tried > 0)
            tried += 1
            if numbers.size:
                found[numbers] = len(used)
                used.append(layout)
                if layout in known and known[0] is not layout:
                    known.remove(layout)
                    known.insert(0, layout)  # the most useful first
                pending = pending[found[pending] < 0]

    def _learn(self, message: bytes, span: tuple[int, int],
               now_s: float) -> tuple[Layout, Layout] | None:
        """The head and body layouts of the event at `span`, kept (a part already known is
        not kept twice: the known one is returned)."""
        event = message[span[0]:span[1]]
        for rules in self._rules:
            match = rules.encoded_event.fullmatch(event)
            if match is not None:
                # A template too far ahead would still teach a fine layout, but the one
                # that teaches must itself be valid now: keep the rule simple.
                ceiling = seconds_ceiling(now_s + rules.max_future_s)
                if match["seconds"][::-1] > ceiling:
                    return None
                parts = learn(event, rules)
                if parts is None:
                    return None
                return self._keep(self._heads, parts[0]), self._keep(self._bodies, parts[1])
        return None

    def _keep(self, by_size: dict[int, list[Layout]], layout: Layout) -> Layout:
        known = by_size.get(layout.size)
        if known is None:
            if len(by_size) >= self._max_sizes:
                by_size.pop(next(iter(by_size)))
            known = by_size[layout.size] = []
        for same in known:
            if same.structure == layout.structure:
                return same
        # Last, in place of the layout that went longest without a hit: it moves forward
        # when it proves useful, so a rare layout is not tried first on every batch.
        del known[self._layouts_per_size - 1:]
        known.append(layout)
        return layout


def _sizes_of_groups(sizes: np.ndarray, min_group: int) -> list[int]:
    """The sizes (not negative) that at least `min_group` of `sizes` have."""
    values, counts = np.unique(sizes, return_counts=True)
    return [size for size, count in zip(values.tolist(), counts.tolist(), strict=True)
            if count >= min_group and size >= 0]
