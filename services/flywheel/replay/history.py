"""A labeled history read from Parquet or CSV, checked against the spec, in file order.

Columns: the features named as in the spec (every feature the model reads; any other
feature of the entity present is sent as well), a label column, and optionally an entity id,
an event time and a drift column. Values are cast to the spec's dtypes (a string feature
stays a string, an int64 one an integer), so they reach ingest as production sends them.
A row that cannot be sent (a missing feature value, no label) is kept with the reason: the
replay counts it as lost. A column that cannot be cast is an error naming it.

The drift column holds the concept's id (any value): a drift happens at each row whose value
differs from the row before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from flywheel.common.spec import Dtype

_ARROW_TYPES = {Dtype.DOUBLE: pa.float64(), Dtype.INT64: pa.int64(), Dtype.BOOL: pa.bool_(),
                Dtype.STRING: pa.string()}


class HistoryError(ValueError):
    """The file cannot be replayed (the message names the file and the column)."""


@dataclass(frozen=True)
class Columns:
    label: str = "label"
    entity: str = "entity_id"
    time: str = "event_time"
    drift: str = "drift"


@dataclass
class History:
    """Rows in file order. ``features``: name -> values (None where missing), only the
    entity features the file holds; ``labels``: float64 (a class index for classification);
    ``event_ms``: epoch milliseconds, or None when the file has no time column;
    ``refusals``: per row, why it cannot be sent (None: it can)."""

    features: dict[str, list]
    labels: np.ndarray
    entity_ids: list[str]
    event_ms: list[int | None] | None
    drift_rows: list[int]
    refusals: list[str | None]
    generated_entity_ids: bool

    def __len__(self) -> int:
        return len(self.labels)

    def row_values(self, row: int) -> dict[str, object]:
        return {name: values[row] for name, values in self.features.items()}

    def tail(self, start: int) -> History:
        """The rows from ``start`` on (drift rows shifted to match)."""
        return History(
            features={name: values[start:] for name, values in self.features.items()},
            labels=self.labels[start:], entity_ids=self.entity_ids[start:],
            event_ms=None if self.event_ms is None else self.event_ms[start:],
            drift_rows=[r - start for r in self.drift_rows if r > start],
            refusals=self.refusals[start:], generated_entity_ids=self.generated_entity_ids,
        )


def read_table(path: Path) -> pa.Table:
    """A Parquet (.parquet, .pq) or CSV (.csv) file as an Arrow table."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise HistoryError(f"{path}: no such file")
    try:
        if suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            return pq.read_table(path)
        if suffix == ".csv":
            import pyarrow.csv as pcsv

            # Ids and categories stay text even when they look like numbers.
            return pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(
                strings_can_be_null=True))
    except (pa.ArrowInvalid, OSError) as exc:
        raise HistoryError(f"{path}: cannot read it: {exc}") from None
    raise HistoryError(f"{path}: expected a .parquet or .csv file")


def from_table(
    table: pa.Table,
    feature_dtypes: Mapping[str, Dtype],
    required: Sequence[str],
    classification: bool,
    columns: Columns = Columns(),
    source: str = "the history",
) -> History:
    """``feature_dtypes``: every feature of the entity; ``required``: those the model reads."""
    names = set(table.column_names)
    missing = [name for name in [*required, columns.label] if name not in names]
    if missing:
        raise HistoryError(f"{source}: no column {', '.join(map(repr, missing))} "
                           f"(it has {', '.join(table.column_names)})")
    features = {
        name: _cast(table, name, _ARROW_TYPES[dtype], source)
        for name, dtype in feature_dtypes.items() if name in names
    }
    labels_raw = _cast(table, columns.label, pa.float64(), source)
    rows = table.num_rows
    refusals: list[str | None] = [None] * rows
    for name in required:
        for row, value in enumerate(features[name]):
            if value is None and refusals[row] is None:
                refusals[row] = f"missing feature {name}"
    labels = np.array([np.nan if v is None else v for v in labels_raw], dtype=np.float64)
    for row, value in enumerate(labels_raw):
        if refusals[row] is not None:
            continue
        if value is None or not np.isfinite(value):
            refusals[row] = "missing label"
        elif classification and (value != int(value) or value < 0):
            refusals[row] = "label is not a class index"
    generated = columns.entity not in names
    if generated:
        entity_ids = [f"row{row}" for row in range(rows)]
    else:
        entity_ids = [str(v) if v is not None else "" for v in table.column(columns.entity).to_pylist()]
        for row, entity in enumerate(entity_ids):
            if not entity and refusals[row] is None:
                refusals[row] = "missing entity id"
    event_ms = _event_ms(table, columns.time, source) if columns.time in names else None
    drift_rows = _changes(table.column(columns.drift).to_pylist()) if columns.drift in names else []
    return History(features, labels, entity_ids, event_ms, drift_rows, refusals, generated)


def read_history(path: Path, feature_dtypes: Mapping[str, Dtype], required: Sequence[str],
                 classification: bool, columns: Columns = Columns()) -> History:
    return from_table(read_table(path), feature_dtypes, required, classification, columns,
                      source=str(path))


def _cast(table: pa.Table, name: str, arrow_type: pa.DataType, source: str) -> list:
    column = table.column(name)
    try:
        if arrow_type == pa.string() and not pa.types.is_string(column.type):
            # A number read where the spec says string: its text, as the user wrote it.
            return [None if v is None else str(v) for v in column.to_pylist()]
        return column.cast(arrow_type, safe=True).to_pylist()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise HistoryError(f"{source}: column {name!r} ({column.type}) does not read as "
                           f"{arrow_type}: {exc}") from None


def _event_ms(table: pa.Table, name: str, source: str) -> list[int | None]:
    """Timestamps (naive ones read as UTC), ISO 8601 text, or numbers of epoch seconds."""
    column = table.column(name)
    if pa.types.is_timestamp(column.type):
        # The stored integers are UTC whatever the zone attached; a naive one is read as UTC.
        values = column.cast(pa.timestamp("ms", tz=column.type.tz)).cast(pa.int64()).to_pylist()
        return [None if v is None else int(v) for v in values]
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        return [None if v is None else round(v * 1000) for v in column.to_pylist()]
    out: list[int | None] = []
    for value in column.to_pylist():
        if value is None:
            out.append(None)
            continue
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError:
            raise HistoryError(f"{source}: column {name!r}: {value!r} is not an ISO 8601 "
                               f"time") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        out.append(int(moment.timestamp() * 1000))
    return out


def _changes(values: Sequence[object]) -> list[int]:
    return [row for row in range(1, len(values)) if values[row] != values[row - 1]]
