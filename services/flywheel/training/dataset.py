"""Labeled examples on disk (Parquet segments) and in memory (one table per model).

A segment holds records of one topic partition, named by its first and last offset:

    <data_dir>/segments/<topic>/p<partition>/<first>-<last>.parquet

written to a temporary file, fsynced, renamed. The consumer stores its offsets only after
the segment is on disk, so a crash re-delivers at most what was not written; a re-delivered
record lands in a segment again and is dropped on load by (partition, offset).

A training window is the most recent N examples of a model (shadow predictions excluded:
they repeat the champion's rows). Its lineage is one offset range per partition, and the
window is defined as *every* non-shadow example of the model inside those ranges, so the
ranges alone reproduce it exactly.

Each row keeps the `traceparent` its record carried (the trace of the prediction it labels),
so a run can link to the traces of the examples it trained on. Segments written before the
column existed read as rows without one.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from flywheel.common.files import atomic_write
from flywheel.common.spec import ModelSpec
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


@dataclass(frozen=True)
class LabeledRow:
    topic: str
    partition: int
    offset: int
    ts_ms: int
    example: events_pb2.LabeledExample
    traceparent: str = ""


@dataclass(frozen=True)
class Window:
    """One run's data: train then holdout (the most recent), plus where it came from."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_holdout: np.ndarray
    y_holdout: np.ndarray
    ranges: list[tuple[str, int, int, int]]  # topic, partition, first, last (inclusive)
    prediction_ids: list[str]
    # The traceparent of each example of the window ('' where its record had none).
    traceparents: list[str]
    # (ts, partition, offset) of the last training row: the rows of the ranges up to it
    # (in that order) are the training rows, the later ones the holdout.
    train_until: tuple[int, int, int] = (0, 0, -1)


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
    file only), and the row filter the in-memory index applies."""

    model_name: str
    features: tuple[str, ...]
    classification: bool
    slices: tuple[SegmentSlice, ...]
    train_until: tuple[int, int, int]
    expected_rows: int
    expected_digest: int


@dataclass(frozen=True)
class Served:
    """Joined predictions of one version: what it was given, the truth, what it said."""

    X: np.ndarray
    y: np.ndarray
    predicted: np.ndarray
    first_ts: int  # timestamp of the first row (0: none)

    def __len__(self) -> int:
        return len(self.y)


class ModelTable:
    """The examples of one model, in its input order, appended in chunks."""

    _COLUMNS = ("partition", "offset", "ts", "version", "role", "label", "predicted", "valid_y")

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.topic = ""
        self._chunks: list[dict[str, np.ndarray]] = []
        self._ids: list[list[str]] = []
        self._traces: list[list[str]] = []
        self._cache: dict[str, np.ndarray] | None = None
        self._cache_ids: list[str] | None = None
        self._cache_traces: list[str] | None = None
        self._seen: set[tuple[int, int]] = set()
        self.total = 0  # non-shadow rows ever added

    def add(self, rows: Sequence[tuple[str, int, int, int, str, int, int, float, bool, int,
                                       list[float], str]]) -> int:
        fresh = [r for r in rows if (r[1], r[2]) not in self._seen]
        if not fresh:
            return 0
        for r in fresh:
            self._seen.add((r[1], r[2]))
        self.topic = fresh[0][0]
        classification = self.spec.task.is_classification
        chunk = {
            "partition": np.array([r[1] for r in fresh], dtype=np.int32),
            "offset": np.array([r[2] for r in fresh], dtype=np.int64),
            "ts": np.array([r[3] for r in fresh], dtype=np.int64),
            "version": np.array([r[5] for r in fresh], dtype=np.int64),
            "role": np.array([r[6] for r in fresh], dtype=np.int32),
            "label": np.array([r[7] for r in fresh], dtype=np.float64),
            "valid_y": np.array([r[8] == classification for r in fresh], dtype=bool),
            "predicted": np.array([r[9] for r in fresh], dtype=np.float64),
            "X": np.array([r[10] for r in fresh], dtype=np.float64).reshape(len(fresh), -1),
        }
        self._chunks.append(chunk)
        self._ids.append([r[4] for r in fresh])
        self._traces.append([r[11] for r in fresh])
        self._cache = None
        self.total += int((chunk["role"] != SHADOW).sum())
        return len(fresh)

    def columns(self) -> tuple[dict[str, np.ndarray], list[str]]:
        return self._merged()[:2]

    def traces(self) -> list[str]:
        """Each row's traceparent, in the order of `columns`."""
        return self._merged()[2]

    def _merged(self) -> tuple[dict[str, np.ndarray], list[str], list[str]]:
        if self._cache is None:
            if not self._chunks:
                n = len(self.spec.features)
                empty = {k: np.zeros(0, dtype=bool if k == "valid_y" else np.int64)
                         for k in self._COLUMNS}
                empty["X"] = np.zeros((0, n))
                return empty, [], []
            merged = {k: np.concatenate([c[k] for c in self._chunks]) for k in self._chunks[0]}
            ids = [i for chunk in self._ids for i in chunk]
            traces = [t for chunk in self._traces for t in chunk]
            order = np.lexsort((merged["offset"], merged["partition"], merged["ts"]))
            self._cache = {k: v[order] for k, v in merged.items()}
            self._cache_ids = [ids[i] for i in order]
            self._cache_traces = [traces[i] for i in order]
            self._chunks = [self._cache]
            self._ids = [self._cache_ids]
            self._traces = [self._cache_traces]
        return self._cache, self._cache_ids or [], self._cache_traces or []


class Dataset:
    def __init__(self, data_dir: Path, models: Iterable[ModelSpec]) -> None:
        self._dir = Path(data_dir) / "segments"
        self._tables = {m.name: ModelTable(m) for m in models}
        self._lock = threading.Lock()
        self.skipped = 0

    # -- writing -----------------------------------------------------------------------------

    def append(self, rows: Sequence[LabeledRow]) -> None:
        """Writes the rows durably (one segment per topic partition), then indexes them."""
        by_partition: dict[tuple[str, int], list[LabeledRow]] = {}
        for row in rows:
            by_partition.setdefault((row.topic, row.partition), []).append(row)
        for (topic, partition), part in by_partition.items():
            self._write_segment(topic, partition, part)
        self._index(_row_tuples(rows))

    def _write_segment(self, topic: str, partition: int, rows: list[LabeledRow]) -> None:
        folder = self._dir / topic / f"p{partition}"
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{rows[0].offset:020d}-{rows[-1].offset:020d}.parquet"
        tuples = _row_tuples(rows)
        table = pa.Table.from_pydict(
            {field.name: [t[i] for t in tuples] for i, field in enumerate(SCHEMA)}, schema=SCHEMA
        )
        atomic_write(folder / name, lambda handle: pq.write_table(table, handle, compression="zstd"))

    def _index(self, tuples: list[tuple]) -> None:
        by_model: dict[str, list[tuple]] = {}
        for t in tuples:
            table = self._tables.get(t[5])
            if table is None:
                self.skipped += 1
                continue
            wanted = list(table.spec.features)
            names = t[12].split(",")
            if names != wanted:
                if not set(wanted) <= set(names):
                    self.skipped += 1
                    continue
                position = {n: i for i, n in enumerate(names)}
                t = (*t[:13], [t[13][position[n]] for n in wanted], *t[14:])
            # topic, partition, offset, ts, id, version, role, label, label_is_class,
            # predicted, X, traceparent
            by_model.setdefault(t[5], []).append(
                (t[0], t[1], t[2], t[3], t[4], t[6], t[7], t[8], t[9],
                 t[10] if t[9] else t[11], t[13], t[14] or "")
            )
        with self._lock:
            for name, rows in by_model.items():
                self._tables[name].add(rows)

    def load(self) -> int:
        """Indexes every segment on disk (at start); returns the rows indexed."""
        files = sorted(self._dir.glob("*/p*/*.parquet")) if self._dir.exists() else []
        count = 0
        for path in files:
            table = pq.read_table(path)
            columns = [table.column(f.name).to_pylist() if f.name in table.column_names
                       else [None] * table.num_rows for f in SCHEMA]
            self._index(list(zip(*columns, strict=True)))
            count += table.num_rows
        return count

    # -- reading -----------------------------------------------------------------------------

    def total(self, model: str) -> int:
        with self._lock:
            table = self._tables.get(model)
            return table.total if table else 0

    def window(self, model: str, size: int, holdout_fraction: float) -> Window:
        with self._lock:
            table = self._tables[model]
            cols, ids = table.columns()
            traces = table.traces()
            topic = table.topic
        keep = np.flatnonzero((cols["role"] != SHADOW) & cols["valid_y"])
        recent = keep[-size:]
        ranges = []
        selected = np.zeros(len(cols["role"]), dtype=bool)
        for partition in np.unique(cols["partition"][recent]):
            in_part = recent[cols["partition"][recent] == partition]
            first, last = int(cols["offset"][in_part].min()), int(cols["offset"][in_part].max())
            ranges.append((topic, int(partition), first, last))
            selected |= ((cols["partition"] == partition) & (cols["offset"] >= first)
                         & (cols["offset"] <= last))
        rows = np.flatnonzero(selected & (cols["role"] != SHADOW) & cols["valid_y"])
        n_holdout = int(np.ceil(len(rows) * holdout_fraction))
        train, holdout = rows[: len(rows) - n_holdout], rows[len(rows) - n_holdout:]
        last = train[-1] if len(train) else None
        until = ((int(cols["ts"][last]), int(cols["partition"][last]), int(cols["offset"][last]))
                 if last is not None else (0, 0, -1))
        return Window(cols["X"][train], cols["label"][train], cols["X"][holdout],
                      cols["label"][holdout], ranges, [ids[i] for i in rows],
                      [traces[i] for i in rows], until)

    def plan(self, spec: ModelSpec, window: Window) -> SegmentPlan:
        """The segment files and offsets that hold `window`'s training rows, and the count
        and digest of those rows, for an engine that reads them itself (ray)."""
        slices = []
        for topic, partition, first, last in window.ranges:
            folder = self._dir / topic / f"p{partition}"
            read_up_to = first - 1  # offsets already covered by an earlier file
            for path in sorted(folder.glob("*.parquet")):
                low, high = (int(part) for part in path.stem.split("-"))
                start, end = max(low, first, read_up_to + 1), min(high, last)
                if start <= end:
                    slices.append(SegmentSlice(str(path), partition, start, end))
                    read_up_to = end
        train_ids = window.prediction_ids[: len(window.y_train)]
        return SegmentPlan(spec.name, tuple(spec.features), spec.task.is_classification,
                           tuple(slices), window.train_until, len(train_ids),
                           rows_digest(train_ids))

    def features_in(self, model: str, ranges: Sequence[tuple[str, int, int, int]]) -> np.ndarray:
        """Feature rows of the non-shadow examples inside `ranges` (a version's lineage)."""
        with self._lock:
            cols, _ = self._tables[model].columns()
        mask = np.zeros(len(cols["role"]), dtype=bool)
        for _, partition, first, last in ranges:
            mask |= ((cols["partition"] == partition) & (cols["offset"] >= first)
                     & (cols["offset"] <= last))
        return cols["X"][mask & (cols["role"] != SHADOW)]

    def recent_features(self, model: str, size: int) -> np.ndarray:
        with self._lock:
            cols, _ = self._tables[model].columns()
        return cols["X"][np.flatnonzero(cols["role"] != SHADOW)[-size:]]

    def served(self, model: str, version: int, role: int, last: int,
               since_ts: int = 0) -> Served:
        """One version's joined predictions in `role`, the most recent `last` of them (from
        `since_ts` on): the features it was given, the labels, what it predicted."""
        with self._lock:
            cols, _ = self._tables[model].columns()
        rows = np.flatnonzero((cols["version"] == version) & (cols["role"] == role)
                              & cols["valid_y"] & (cols["ts"] >= since_ts))[-last:]
        return Served(cols["X"][rows], cols["label"][rows], cols["predicted"][rows],
                      int(cols["ts"][rows[0]]) if len(rows) else 0)

    def first_served(self, model: str, version: int, role: int, first: int) -> Served:
        """The first `first` joined predictions of a version in `role` (its first window)."""
        with self._lock:
            cols, _ = self._tables[model].columns()
        rows = np.flatnonzero((cols["version"] == version) & (cols["role"] == role)
                              & cols["valid_y"])[:first]
        return Served(cols["X"][rows], cols["label"][rows], cols["predicted"][rows],
                      int(cols["ts"][rows[0]]) if len(rows) else 0)


def rows_digest(prediction_ids: Iterable[str]) -> int:
    """An order-free digest of a set of rows (by prediction id): a sum of 32-bit hashes,
    which parts of a data set can compute apart and add up."""
    return sum(int.from_bytes(hashlib.blake2b(i.encode(), digest_size=4).digest(), "little")
               for i in prediction_ids)


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
