"""Labeled examples on disk (Parquet segments), a catalog of them in memory, and windows
streamed from them.

A segment holds records of one topic partition, named by its first and last offset:

    <data_dir>/segments/<topic>/p<partition>/<first>-<last>.parquet

written to a temporary file, fsynced, renamed. The consumer stores its offsets only after
the segment is on disk, so a crash re-delivers at most what was not written; a re-delivered
record lands in a segment again, and each partition's offsets are read from one file only
(a file's part already covered by an earlier file is left out: its *effective* range).

Memory does not grow with the data. What the service keeps per model is

- a catalog: one entry per segment file (its effective offsets, how many of the model's rows
  it holds, their time span, which versions and roles they carry), and
- a tail: the most recent `tail_rows` of the model's rows with their features, which the
  live metric, the live gate and drift detection ask for every few seconds.

Older rows are read back from the segments when asked for, a batch at a time.

A training window is the most recent N examples of a model (shadow predictions excluded:
they repeat the champion's rows), by (timestamp, partition, offset). Its lineage is one
offset range per partition, and the window is *every* such example of the model inside those
ranges, so the ranges alone reproduce it exactly. The newest `holdout_fraction` of it is the
holdout. A window is found from the catalog (a search over timestamps that reads only the
segments it must) and then streamed: the training rows go to a spill file
(flywheel.training.spill) that a trainer reads in batches, the holdout stays in memory.

Each row keeps the `traceparent` its record carried (the trace of the prediction it labels),
so a run can link to the traces of the examples it trained on. Segments written before the
column existed read as rows without one.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from flywheel.common.files import atomic_write
from flywheel.common.spec import ModelSpec
from flywheel.training.segments import ALL_COLUMNS, KEY_COLUMNS, ModelRows, concat, model_rows
from flywheel.training.spill import RowSpiller, SpilledRows
from flywheel.v1 import common_pb2, events_pb2

log = logging.getLogger("flywheel.training.dataset")

SHADOW = common_pb2.MODEL_ROLE_SHADOW
CHAMPION = common_pb2.MODEL_ROLE_CHAMPION

SCHEMA = pa.schema([
    ("topic", pa.string()), ("partition", pa.int32()), ("offset", pa.int64()),
    ("ts_ms", pa.int64()), ("prediction_id", pa.string()), ("model_name", pa.string()),
    ("model_version", pa.int64()), ("role", pa.int32()), ("label", pa.float64()),
    ("label_is_class", pa.bool_()), ("predicted_class", pa.int64()),
    ("predicted_value", pa.float64()), ("feature_names", pa.string()),
    ("features", pa.list_(pa.float64())), ("traceparent", pa.string()),
])

# Recent rows per model kept with their features (for the live checks).
TAIL_ROWS = 65_536
# Rows read from a segment at a time.
READ_BATCH_ROWS = 65_536
# Rows a drift reference keeps (an even sample of a lineage's rows).
REFERENCE_ROWS = 50_000
# Distinct traces a window remembers for its run's links.
TRACE_LINKS = 4_096

Key = tuple[int, int, int]  # (ts, partition, offset): the order of examples
EARLIEST: Key = (-(2**62), 0, 0)
# Keys of segment rows kept for the window search (20 bytes a row).
KEY_CACHE_ROWS = 1_000_000
Bounds = dict[int, tuple[int, int]]  # partition -> (first, last) offsets, inclusive


@dataclass(frozen=True)
class LabeledRow:
    topic: str
    partition: int
    offset: int
    ts_ms: int
    example: events_pb2.LabeledExample
    traceparent: str = ""


@dataclass(frozen=True)
class SegmentSlice:
    """One segment file and the offsets to read from it (inclusive)."""

    path: str
    partition: int
    first: int
    last: int


@dataclass(frozen=True)
class SegmentPlan:
    """Where a window's training rows lie on disk, for an engine that reads the segments
    itself: the files and offsets (a re-delivered record written twice is read from one
    file only), and the row filter the dataset applies."""

    model_name: str
    features: tuple[str, ...]
    classification: bool
    slices: tuple[SegmentSlice, ...]
    train_until: tuple[int, int, int]
    expected_rows: int
    expected_digest: int


@dataclass
class Window:
    """One run's data: the training rows (on disk, or an empty array when no row), the
    holdout (the most recent rows, in memory), and where they came from."""

    X_train: SpilledRows | np.ndarray
    y_train: np.ndarray
    X_holdout: np.ndarray
    y_holdout: np.ndarray
    ranges: list[tuple[str, int, int, int]]  # topic, partition, first, last (inclusive)
    # Distinct traceparents of the window's examples (up to TRACE_LINKS).
    traceparents: list[str]
    # The key of the last training row: the rows of the ranges up to it are the training
    # rows, the later ones the holdout.
    train_until: Key = (0, 0, -1)
    train_digest: int = 0
    slices: tuple[SegmentSlice, ...] = ()
    _ids: Callable[[], list[str]] | None = field(default=None, repr=False)

    def prediction_ids(self) -> list[str]:
        """The prediction ids of the window, training rows then holdout (read back from the
        segments: a large window's ids are not kept in memory)."""
        return self._ids() if self._ids else []

    def close(self) -> None:
        """Removes the spilled training rows."""
        if isinstance(self.X_train, SpilledRows):
            self.X_train.close()


@dataclass(frozen=True)
class Served:
    """Joined predictions of one version: what it was given, the truth, what it said."""

    X: np.ndarray
    y: np.ndarray
    predicted: np.ndarray
    first_ts: int  # timestamp of the first row (0: none)

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class _Entry:
    """One segment file's part of one model's rows."""

    path: Path
    topic: str
    partition: int
    first: int  # effective offsets: what this file is read for
    last: int
    rows: int  # eligible rows (for training)
    non_shadow: int
    ts_low: int  # time span of all the model's rows in it
    ts_high: int
    # (version, role) pairs of its rows with a label of the model's task.
    served: frozenset[tuple[int, int]]
    # Of its eligible rows: time span and offsets.
    e_ts_low: int = 0
    e_ts_high: int = -1
    e_low: int = 0
    e_high: int = -1

    def overlaps(self, bounds: Bounds | None) -> bool:
        if bounds is None:
            return True
        if self.partition not in bounds:
            return False
        first, last = bounds[self.partition]
        return self.e_low <= last and self.e_high >= first

    def inside(self, bounds: Bounds | None) -> bool:
        if bounds is None:
            return True
        first, last = bounds.get(self.partition, (1, 0))
        return first <= self.e_low and self.e_high <= last


class _Tail:
    """The most recent rows of one model, with their features."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.complete = True  # holds every row of the model ever indexed
        self._chunks: list[ModelRows] = []
        self._rows = 0
        self._sorted: ModelRows | None = None

    def add(self, rows: ModelRows) -> None:
        if not len(rows):
            return
        self._chunks.append(rows)
        self._rows += len(rows)
        self._sorted = None
        while self._rows - len(self._chunks[0]) >= self.capacity:
            self._rows -= len(self._chunks.pop(0))
            self.complete = False

    def rows(self) -> ModelRows | None:
        """Every row held, in key order."""
        if not self._chunks:
            return None
        if self._sorted is None:
            merged = concat(self._chunks).by_key()
            if len(merged) > self.capacity:
                merged, self.complete = merged.newest(self.capacity), False
            self._sorted, self._chunks, self._rows = merged, [merged], len(merged)
        return self._sorted


class _Model:
    def __init__(self, spec: ModelSpec, tail_rows: int) -> None:
        self.spec = spec
        self.entries: list[_Entry] = []
        self.tail = _Tail(tail_rows)
        self.total = 0  # non-shadow rows ever indexed
        self.first_served: dict[tuple[int, int, int], Served] = {}


class Dataset:
    def __init__(self, data_dir: Path, models: Iterable[ModelSpec],
                 tail_rows: int = TAIL_ROWS) -> None:
        self._dir = Path(data_dir) / "segments"
        self._spill = Path(data_dir) / "spill" / str(os.getpid())
        _remove_orphan_spills(self._spill.parent)
        self._models = {m.name: _Model(m, tail_rows) for m in models}
        self._lock = threading.Lock()
        # (topic, partition) -> the highest offset indexed.
        self._high: dict[tuple[str, int], int] = {}
        self._keys: OrderedDict[tuple[str, Path], tuple] = OrderedDict()
        self.skipped = 0

    # -- writing -----------------------------------------------------------------------------

    def append(self, rows: Sequence[LabeledRow]) -> None:
        """Writes the rows durably (one segment per topic partition), then indexes them."""
        by_partition: dict[tuple[str, int], list[LabeledRow]] = {}
        for row in rows:
            by_partition.setdefault((row.topic, row.partition), []).append(row)
        for (topic, partition), part in by_partition.items():
            path, table = self._write_segment(topic, partition, part)
            self._index(path, topic, partition, table, with_tail=True)

    def _write_segment(self, topic: str, partition: int,
                       rows: list[LabeledRow]) -> tuple[Path, pa.Table]:
        folder = self._dir / topic / f"p{partition}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{rows[0].offset:020d}-{rows[-1].offset:020d}.parquet"
        tuples = _row_tuples(rows)
        table = pa.Table.from_pydict(
            {f.name: [t[i] for t in tuples] for i, f in enumerate(SCHEMA)}, schema=SCHEMA)
        atomic_write(path, lambda handle: pq.write_table(table, handle, compression="zstd"))
        return path, table

    def _index(self, path: Path, topic: str, partition: int, table: pa.Table,
               with_tail: bool) -> int:
        """Catalogs one segment (and adds its rows to the tails); returns its new rows."""
        if not table.num_rows:
            return 0
        offsets = table.column("offset").to_numpy()
        low, high = int(offsets.min()), int(offsets.max())
        with self._lock:
            covered = self._high.get((topic, partition), -1)
            first = max(low, covered + 1)
            if first > high:
                return 0  # every record re-delivered: already indexed from another file
            self._high[(topic, partition)] = high
            fresh = int((offsets >= first).sum())
            matched = 0
            for model in self._models.values():
                spec = model.spec
                rows = model_rows(table, spec.name, spec.features,
                                  spec.task.is_classification, first=first, last=high)
                if not len(rows):
                    continue
                matched += len(rows)
                model.entries.append(_entry(path, topic, partition, first, high, rows))
                model.total += int((rows.role != SHADOW).sum())
                if with_tail:
                    model.tail.add(_without_ids(rows))
            self.skipped += fresh - matched
        return fresh

    def load(self) -> int:
        """Catalogs every segment on disk (at start) and reads the most recent rows of each
        model back into its tail; returns the rows indexed."""
        files = sorted(self._dir.glob("*/p*/*.parquet")) if self._dir.exists() else []
        count = 0
        for path in files:
            topic, partition = path.parent.parent.name, int(path.parent.name[1:])
            count += self._index(path, topic, partition, _read(path, KEY_COLUMNS), False)
        for model in self._models.values():
            if model.tail.rows() is None:  # a second load adds nothing: keep the tail
                self._fill_tail(model)
        return count

    def _fill_tail(self, model: _Model) -> None:
        spec, tail = model.spec, model.tail
        chunks: list[ModelRows] = []
        held = 0
        for entry in sorted(model.entries, key=lambda e: e.ts_high, reverse=True):
            if held >= tail.capacity:
                break
            rows = model_rows(_read(entry.path, ALL_COLUMNS), spec.name, spec.features,
                              spec.task.is_classification, entry.first, entry.last)
            chunks.append(_without_ids(rows))
            held += len(rows)
        with self._lock:
            tail.complete = len(chunks) == len(model.entries)
            for rows in reversed(chunks):
                tail.add(rows)

    # -- reading: counts and the live checks -------------------------------------------------

    def total(self, model: str) -> int:
        with self._lock:
            found = self._models.get(model)
            return found.total if found else 0

    def served(self, model: str, version: int, role: int, last: int,
               since_ts: int = 0) -> Served:
        """One version's joined predictions in `role`, the most recent `last` of them (from
        `since_ts` on): the features it was given, the labels, what it predicted."""

        def wanted(rows: ModelRows) -> np.ndarray:
            return ((rows.version == version) & (rows.role == role) & rows.valid_y
                    & (rows.ts >= since_ts))

        rows = self._newest(model, wanted, last,
                            lambda e: (version, role) in e.served and e.ts_high >= since_ts)
        return _served(rows, self._width(model))

    def first_served(self, model: str, version: int, role: int, first: int) -> Served:
        """The first `first` joined predictions of a version in `role` (its first window)."""
        key = (version, role, first)
        with self._lock:
            cached = self._models[model].first_served.get(key)
        if cached is not None:
            return cached

        def wanted(rows: ModelRows) -> np.ndarray:
            return (rows.version == version) & (rows.role == role) & rows.valid_y

        found = _served(self._oldest(model, wanted, first,
                                     lambda e: (version, role) in e.served), self._width(model))
        if len(found) >= first:  # complete: the first rows of a version do not change
            with self._lock:
                self._models[model].first_served[key] = found
        return found

    def recent_features(self, model: str, size: int) -> np.ndarray:
        rows = self._newest(model, lambda r: r.role != SHADOW, size,
                            lambda e: e.non_shadow > 0)
        return rows.X if rows is not None else self._no_features(model)

    def features_in(self, model: str, ranges: Sequence[tuple[str, int, int, int]],
                    limit: int = REFERENCE_ROWS) -> np.ndarray:
        """Feature rows of the non-shadow examples inside `ranges` (a version's lineage): all
        of them up to `limit`, else an even sample of `limit` of them."""
        bounds = {p: (a, b) for _, p, a, b in ranges}
        with self._lock:
            state = self._models[model]
            entries = [e for e in state.entries if e.partition in bounds
                       and e.first <= bounds[e.partition][1]
                       and e.last >= bounds[e.partition][0]]
            spec = state.spec
        parts, seen = [], 0
        total = sum(e.non_shadow for e in entries)
        step = max(1, math.ceil(total / limit)) if limit else 1
        for entry in sorted(entries, key=lambda e: (e.partition, e.first)):
            first, last = bounds[entry.partition]
            for rows in self._stream(entry, spec, max(first, entry.first),
                                     min(last, entry.last)):
                rows = rows.take(rows.role != SHADOW)
                # Every step-th row of the lineage, counted across batches.
                pick = (np.arange(seen, seen + len(rows)) % step) == 0
                seen += len(rows)
                parts.append(rows.X[pick])
        return np.concatenate(parts) if parts else self._no_features(model)

    # -- reading: windows --------------------------------------------------------------------

    def window(self, model: str, size: int, holdout_fraction: float,
               spill: bool = True) -> Window:
        """The most recent `size` examples (see the module's docstring), training rows
        spilled to disk, holdout in memory. `spill=False` (an engine that reads the segments
        itself): the training rows are counted, digested and their labels kept, their
        features not written (X_train is empty)."""
        with self._lock:
            state = self._models[model]
            entries = [e for e in state.entries if e.rows]
            spec = state.spec
        n_features = len(spec.features)
        cut = self._newest_cut(spec, entries, size, None)
        ranges = self._ranges(spec, entries, cut)
        bounds = {p: (a, b) for _, p, a, b in ranges}
        total = self._count(spec, entries, bounds)
        n_holdout = min(math.ceil(total * holdout_fraction), total)
        # Rows from this key on are the holdout (None: no holdout).
        holdout_from = None
        if n_holdout:
            holdout_from = self._newest_cut(spec, entries, n_holdout, bounds) or EARLIEST
        spiller = RowSpiller(self._spill, n_features)
        y_train: list[np.ndarray] = []
        holdout: list[ModelRows] = []
        traces: dict[str, None] = {}
        digest, until, slices = 0, (0, 0, -1), []
        try:
            for entry in sorted((e for e in entries if e.overlaps(bounds)),
                                key=lambda e: (e.partition, e.first)):
                first, last = bounds[entry.partition]
                start, end = max(first, entry.first), min(last, entry.last)
                slices.append(SegmentSlice(str(entry.path), entry.partition, start, end))
                for rows in self._stream(entry, spec, start, end):
                    rows = rows.take(rows.eligible)
                    later = (_at_or_after(rows, holdout_from) if holdout_from is not None
                             else np.zeros(len(rows), dtype=bool))
                    train = rows.take(~later)
                    holdout.append(rows.take(later))
                    if spill:
                        spiller.write(train.X)
                    y_train.append(train.label)
                    digest += rows_digest(train.prediction_id)
                    until = max(until, _last_key(train))
                    for trace in rows.traceparent:
                        if trace and len(traces) < TRACE_LINKS:
                            traces[trace] = None
            spilled = spiller.finish()
            if not len(spilled):
                spilled.close()
        except BaseException:
            spiller.abort()
            raise
        held = concat(holdout).by_key() if holdout else None
        X_holdout = held.X if held is not None else np.zeros((0, n_features))
        y_holdout = held.label if held is not None else np.zeros(0)
        topic = entries[0].topic if entries else ""
        window_slices = tuple(slices)
        return Window(
            X_train=spilled if len(spilled) else np.zeros((0, n_features)),
            y_train=np.concatenate(y_train) if y_train else np.zeros(0),
            X_holdout=X_holdout, y_holdout=y_holdout,
            ranges=[(topic, p, a, b) for _, p, a, b in ranges], traceparents=list(traces),
            train_until=until, train_digest=digest, slices=window_slices,
            _ids=lambda: self._window_ids(spec, window_slices, until))

    def plan(self, spec: ModelSpec, window: Window) -> SegmentPlan:
        """The segment files and offsets that hold `window`'s training rows, and the count
        and digest of those rows, for an engine that reads them itself (ray)."""
        return SegmentPlan(spec.name, tuple(spec.features), spec.task.is_classification,
                           window.slices, window.train_until, len(window.y_train),
                           window.train_digest)

    def _window_ids(self, spec: ModelSpec, slices: Sequence[SegmentSlice],
                    until: Key) -> list[str]:
        train: list[str] = []
        later: list[ModelRows] = []
        for piece in slices:
            for rows in _stream_file(Path(piece.path), spec, piece.first, piece.last):
                rows = rows.take(rows.eligible)
                after = _after(rows, until)
                train.extend(rows.take(~after).prediction_id)
                later.append(rows.take(after))
        held = concat(later).by_key() if later else None
        return train + (held.prediction_id if held is not None else [])

    # -- the search over the catalog ---------------------------------------------------------

    def _entry_keys(self, entry: _Entry, spec: ModelSpec) -> tuple[np.ndarray, ...]:
        """(ts, partition, offset) of an entry's eligible rows; the last few files' kept."""
        cache_key = (spec.name, entry.path)
        with self._lock:
            if cache_key in self._keys:
                self._keys.move_to_end(cache_key)
                return self._keys[cache_key]
        rows = model_rows(_read(entry.path, KEY_COLUMNS), spec.name, spec.features,
                          spec.task.is_classification, entry.first, entry.last)
        rows = rows.take(rows.eligible)
        keys = (rows.ts, rows.partition.astype(np.int64), rows.offset)
        with self._lock:
            self._keys[cache_key] = keys
            while sum(len(k[0]) for k in self._keys.values()) > KEY_CACHE_ROWS \
                    and len(self._keys) > 1:
                self._keys.popitem(last=False)
        return keys

    def _count_from(self, entries: Sequence[_Entry], ts: int, bounds: Bounds | None,
                    spec: ModelSpec) -> int:
        """Eligible rows with a timestamp at or after `ts` (inside `bounds`)."""
        count = 0
        for entry in entries:
            if entry.e_ts_high < ts or not entry.overlaps(bounds):
                continue
            if entry.e_ts_low >= ts and entry.inside(bounds):
                count += entry.rows
                continue
            t, p, o = self._entry_keys(entry, spec)
            count += int(((t >= ts) & _in_bounds(p, o, bounds)).sum())
        return count

    def _newest_cut(self, spec: ModelSpec, entries: Sequence[_Entry], n: int,
                    bounds: Bounds | None) -> Key | None:
        """The key of the `n`-th newest eligible row (inside `bounds`); None when there are
        `n` rows or fewer (all of them are wanted)."""
        if n <= 0 or self._count(spec, entries, bounds) <= n:
            return None
        live = [e for e in entries if e.overlaps(bounds)]
        low = min(e.e_ts_low for e in live)
        high = max(e.e_ts_high for e in live)
        # The latest timestamp t with at least n rows at or after it.
        while low < high:
            middle = (low + high + 1) // 2
            if self._count_from(live, middle, bounds, spec) >= n:
                low = middle
            else:
                high = middle - 1
        newer = self._count_from(live, low + 1, bounds, spec)
        # Among the rows at exactly `low`, the newest (partition, offset) first.
        ties = []
        for entry in live:
            if entry.e_ts_low <= low <= entry.e_ts_high:
                t, p, o = self._entry_keys(entry, spec)
                at = (t == low) & _in_bounds(p, o, bounds)
                ties.extend(zip(p[at].tolist(), o[at].tolist(), strict=True))
        ties.sort(reverse=True)
        partition, offset = ties[n - newer - 1]
        return (low, partition, offset)

    def _count(self, spec: ModelSpec, entries: Sequence[_Entry], bounds: Bounds | None) -> int:
        count = 0
        for entry in entries:
            if not entry.overlaps(bounds):
                continue
            if entry.inside(bounds):
                count += entry.rows
            else:
                _, p, o = self._entry_keys(entry, spec)
                count += int(_in_bounds(p, o, bounds).sum())
        return count

    def _ranges(self, spec: ModelSpec, entries: Sequence[_Entry],
                cut: Key | None) -> list[tuple[str, int, int, int]]:
        """Per partition, the first and last offset of the eligible rows from `cut` on."""
        found: dict[int, tuple[int, int]] = {}

        def widen(partition: int, low: int, high: int) -> None:
            a, b = found.get(partition, (low, high))
            found[partition] = (min(a, low), max(b, high))

        for entry in entries:
            if cut is None or entry.e_ts_low > cut[0]:
                widen(entry.partition, entry.e_low, entry.e_high)
            elif entry.e_ts_high >= cut[0]:
                t, p, o = self._entry_keys(entry, spec)
                keep = _key_at_or_after(t, p, o, cut)
                if keep.any():
                    widen(entry.partition, int(o[keep].min()), int(o[keep].max()))
        topic = entries[0].topic if entries else ""
        return [(topic, p, a, b) for p, (a, b) in sorted(found.items())]

    # -- reading rows back -------------------------------------------------------------------

    def _stream(self, entry: _Entry, spec: ModelSpec, first: int,
                last: int) -> Iterator[ModelRows]:
        return _stream_file(entry.path, spec, first, last)

    def _newest(self, model: str, wanted: Callable[[ModelRows], np.ndarray], n: int,
                holds: Callable[[_Entry], bool]) -> ModelRows | None:
        """The newest `n` rows that `wanted` keeps, in key order: from the tail when it
        holds enough of them, else read back from the segments, newest first."""
        with self._lock:
            state = self._models[model]
            tail = state.tail.rows()
            complete = state.tail.complete
            entries = [e for e in state.entries if holds(e)]
            spec = state.spec
        if tail is not None:
            picked = tail.take(wanted(tail))
            if complete or len(picked) >= n:
                return picked.newest(n)
        found: ModelRows | None = None
        for entry in sorted(entries, key=lambda e: e.ts_high, reverse=True):
            if found is not None and len(found) >= n and entry.ts_high < found.ts[0]:
                break  # nothing older can be among the newest n
            for rows in self._stream(entry, spec, entry.first, entry.last):
                rows = _without_ids(rows.take(wanted(rows)))
                found = concat([found, rows] if found else [rows]).by_key().newest(n)
        return found

    def _oldest(self, model: str, wanted: Callable[[ModelRows], np.ndarray], n: int,
                holds: Callable[[_Entry], bool]) -> ModelRows | None:
        """The oldest `n` rows that `wanted` keeps, in key order."""
        with self._lock:
            state = self._models[model]
            tail = state.tail.rows()
            complete = state.tail.complete
            entries = [e for e in state.entries if holds(e)]
            spec = state.spec
        if tail is not None and complete:
            picked = tail.take(wanted(tail))
            return picked.oldest(n)
        found: ModelRows | None = None
        for entry in sorted(entries, key=lambda e: e.ts_low):
            if found is not None and len(found) >= n and entry.ts_low > found.ts[-1]:
                break
            for rows in self._stream(entry, spec, entry.first, entry.last):
                rows = _without_ids(rows.take(wanted(rows)))
                found = concat([found, rows] if found else [rows]).by_key().oldest(n)
        return found

    def _width(self, model: str) -> int:
        return len(self._models[model].spec.features)

    def _no_features(self, model: str) -> np.ndarray:
        return np.zeros((0, self._width(model)))


# -- helpers -----------------------------------------------------------------------------------

def rows_digest(prediction_ids: Iterable[str]) -> int:
    """An order-free digest of a set of rows (by prediction id): a sum of 32-bit hashes,
    which parts of a data set can compute apart and add up."""
    return sum(int.from_bytes(hashlib.blake2b(i.encode(), digest_size=4).digest(), "little")
               for i in prediction_ids)


def _remove_orphan_spills(folder: Path) -> None:
    """Spill folders of processes that are gone (a run cut short leaves its file)."""
    if not folder.is_dir():
        return
    for child in folder.iterdir():
        try:
            os.kill(int(child.name), 0)
        except (ValueError, ProcessLookupError):
            shutil.rmtree(child, ignore_errors=True)
        except PermissionError:
            pass  # alive, another user's


def _read(path: Path, columns: Sequence[str]) -> pa.Table:
    """A segment's columns (those it has: older segments lack the traceparent)."""
    with pq.ParquetFile(path) as handle:
        present = set(handle.schema_arrow.names)
        return handle.read(columns=[c for c in columns if c in present])


def _stream_file(path: Path, spec: ModelSpec, first: int, last: int) -> Iterator[ModelRows]:
    """The model's rows of one segment within [first, last], a batch at a time."""
    with pq.ParquetFile(path) as handle:
        present = set(handle.schema_arrow.names)
        columns = [c for c in ALL_COLUMNS if c in present]
        for batch in handle.iter_batches(batch_size=READ_BATCH_ROWS, columns=columns):
            rows = model_rows(pa.Table.from_batches([batch]), spec.name, spec.features,
                              spec.task.is_classification, first, last)
            if len(rows):
                yield rows


def _entry(path: Path, topic: str, partition: int, first: int, last: int,
           rows: ModelRows) -> _Entry:
    eligible = rows.eligible
    served = {(int(v), int(r)) for v, r in
              set(zip(rows.version[rows.valid_y].tolist(), rows.role[rows.valid_y].tolist(),
                      strict=True))}
    entry = _Entry(path, topic, partition, first, last, rows=int(eligible.sum()),
                   non_shadow=int((rows.role != SHADOW).sum()), ts_low=int(rows.ts.min()),
                   ts_high=int(rows.ts.max()), served=frozenset(served))
    if entry.rows:
        entry.e_ts_low, entry.e_ts_high = int(rows.ts[eligible].min()), int(rows.ts[eligible].max())
        entry.e_low, entry.e_high = (int(rows.offset[eligible].min()),
                                     int(rows.offset[eligible].max()))
    return entry


def _in_bounds(partition: np.ndarray, offset: np.ndarray, bounds: Bounds | None) -> np.ndarray:
    if bounds is None:
        return np.ones(len(offset), dtype=bool)
    inside = np.zeros(len(offset), dtype=bool)
    for p, (first, last) in bounds.items():
        inside |= (partition == p) & (offset >= first) & (offset <= last)
    return inside


def _key_at_or_after(ts: np.ndarray, partition: np.ndarray, offset: np.ndarray,
                     key: Key) -> np.ndarray:
    t, p, o = key
    return (ts > t) | ((ts == t) & ((partition > p) | ((partition == p) & (offset >= o))))


def _at_or_after(rows: ModelRows, key: Key) -> np.ndarray:
    return _key_at_or_after(rows.ts, rows.partition, rows.offset, key)


def _after(rows: ModelRows, key: Key) -> np.ndarray:
    t, p, o = key
    return _key_at_or_after(rows.ts, rows.partition, rows.offset, (t, p, o + 1))


def _last_key(rows: ModelRows) -> Key:
    if not len(rows):
        return (0, 0, -1)
    i = np.lexsort((rows.offset, rows.partition, rows.ts))[-1]
    return (int(rows.ts[i]), int(rows.partition[i]), int(rows.offset[i]))


def _without_ids(rows: ModelRows) -> ModelRows:
    rows.prediction_id = rows.traceparent = None
    return rows


def _served(rows: ModelRows | None, n_features: int) -> Served:
    if rows is None or not len(rows):
        return Served(np.zeros((0, n_features)), np.zeros(0), np.zeros(0), 0)
    return Served(rows.X, rows.label, rows.predicted, int(rows.ts[0]))


def _row_tuples(rows: Iterable[LabeledRow]) -> list[tuple]:
    out = []
    for row in rows:
        e = row.example
        kind = e.label.WhichOneof("kind")
        label = float(e.label.class_label) if kind == "class_label" else e.label.value
        out.append((row.topic, row.partition, row.offset, row.ts_ms, e.prediction_id,
                    e.model_name, e.model_version, int(e.role), label, kind == "class_label",
                    e.prediction.predicted_class, e.prediction.predicted_value,
                    ",".join(e.feature_names), list(e.features), row.traceparent))
    return out
