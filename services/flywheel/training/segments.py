"""Reading one model's rows out of a segment table, vectorized with pyarrow.

One rule, used wherever labeled examples are read back: by the dataset's catalog and its
streamed windows in the training service, and by the Ray engine's Ray Data tasks. A row
belongs to a model when it names the model and its record carries every feature the model
reads (in any order: the features come back in the model's order). A row is *eligible* for
training when it is not a shadow prediction (it repeats the champion's row) and its label is
of the model's task (a class for a classifier, a value for a regressor).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SHADOW = 2  # common_pb2.MODEL_ROLE_SHADOW (kept here: Ray workers import this module alone)

# Everything but the features: what the catalog reads.
KEY_COLUMNS = ["partition", "offset", "ts_ms", "model_name", "model_version", "role",
               "label", "label_is_class", "predicted_class", "predicted_value",
               "feature_names"]
ALL_COLUMNS = [*KEY_COLUMNS, "features", "prediction_id", "traceparent"]


@dataclass
class ModelRows:
    """A model's rows of one segment table, in the table's order."""

    partition: np.ndarray  # int32
    offset: np.ndarray  # int64
    ts: np.ndarray  # int64
    version: np.ndarray  # int64
    role: np.ndarray  # int32
    label: np.ndarray  # float64
    predicted: np.ndarray  # float64: the class for a classifier, else the value
    valid_y: np.ndarray  # bool: the label is of the model's task
    X: np.ndarray | None  # [n, features] float64; None when the features were not read
    prediction_id: list[str] | None
    traceparent: list[str] | None

    def __len__(self) -> int:
        return len(self.offset)

    @property
    def eligible(self) -> np.ndarray:
        return (self.role != SHADOW) & self.valid_y

    def take(self, mask: np.ndarray) -> ModelRows:
        """The rows where `mask` is true."""
        return self.reorder(np.flatnonzero(mask))

    def reorder(self, index: np.ndarray) -> ModelRows:
        """The rows at `index`, in its order."""

        def pick(values):
            if values is None:
                return None
            return [values[i] for i in index] if isinstance(values, list) else values[index]

        return ModelRows(*(pick(getattr(self, name)) for name in _FIELDS))

    def by_key(self) -> ModelRows:
        """The rows in key order: (timestamp, partition, offset)."""
        return self.reorder(np.lexsort((self.offset, self.partition, self.ts)))

    def newest(self, n: int) -> ModelRows:
        """The last `n` rows."""
        return self.reorder(np.arange(max(len(self) - n, 0), len(self)))

    def oldest(self, n: int) -> ModelRows:
        return self.reorder(np.arange(min(n, len(self))))


def concat(parts: Sequence[ModelRows]) -> ModelRows:
    def join(name: str):
        values = [getattr(p, name) for p in parts]
        if any(v is None for v in values):
            return None
        if isinstance(values[0], list):
            return [x for v in values for x in v]
        return np.concatenate(values)

    return ModelRows(*(join(name) for name in _FIELDS))


_FIELDS = tuple(ModelRows.__dataclass_fields__)


def model_rows(table: pa.Table, model: str, features: Sequence[str], classification: bool,
               first: int | None = None, last: int | None = None) -> ModelRows:
    """The rows of `model` in `table` (offsets within [first, last] when given); features,
    ids and traceparents are read when the table holds those columns."""
    keep = pc.equal(table.column("model_name"), model)
    if first is not None:
        keep = pc.and_(keep, pc.greater_equal(table.column("offset"), first))
    if last is not None:
        keep = pc.and_(keep, pc.less_equal(table.column("offset"), last))
    table = table.filter(keep)
    wanted = list(features)
    names = table.column("feature_names")
    readable = np.zeros(table.num_rows, dtype=bool)
    orders: dict[str, list[int]] = {}
    for value in pc.unique(names).to_pylist():
        position = {n: j for j, n in enumerate((value or "").split(","))}
        if set(wanted) <= set(position):
            orders[value] = [position[n] for n in wanted]
            readable |= pc.equal(names, value).to_numpy(zero_copy_only=False)
    table = table.filter(pa.array(readable))
    X = _features(table, orders, len(wanted)) if "features" in table.column_names else None
    is_class = _numpy(table, "label_is_class", bool)
    return ModelRows(
        partition=_numpy(table, "partition", np.int32), offset=_numpy(table, "offset", np.int64),
        ts=_numpy(table, "ts_ms", np.int64), version=_numpy(table, "model_version", np.int64),
        role=_numpy(table, "role", np.int32), label=_numpy(table, "label", np.float64),
        predicted=np.where(is_class, _numpy(table, "predicted_class", np.float64),
                           _numpy(table, "predicted_value", np.float64)),
        valid_y=is_class == classification, X=X,
        prediction_id=(table.column("prediction_id").to_pylist()
                       if "prediction_id" in table.column_names else None),
        traceparent=([t or "" for t in table.column("traceparent").to_pylist()]
                     if "traceparent" in table.column_names
                     else ([""] * table.num_rows if "prediction_id" in table.column_names
                           else None)),
    )


def _numpy(table: pa.Table, name: str, dtype) -> np.ndarray:
    column = table.column(name)
    if column.null_count:
        column = pc.fill_null(column, False if dtype is bool else 0)
    return column.to_numpy().astype(dtype, copy=False)


def _features(table: pa.Table, orders: dict[str, list[int]], n: int) -> np.ndarray:
    """The model's features of every row, in its order (rows may name them differently)."""
    out = np.empty((table.num_rows, n), dtype=np.float64)
    names = table.column("feature_names")
    for value, order in orders.items():
        rows = pc.equal(names, value).to_numpy(zero_copy_only=False)
        if not rows.any():
            continue
        lists = table.column("features").filter(pa.array(rows)).combine_chunks()
        width = len(value.split(","))
        flat = pc.list_flatten(lists).to_numpy(zero_copy_only=False).astype(np.float64)
        out[rows] = flat.reshape(-1, width)[:, order]
    return out
