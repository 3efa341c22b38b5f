"""The history reader: Parquet and CSV, renamed columns, generated entity ids, the spec's
dtypes, rows that cannot be sent, event times and drift points."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flywheel.common.spec import Dtype
from flywheel.replay.history import Columns, HistoryError, read_history

DTYPES = {"x": Dtype.DOUBLE, "segment": Dtype.STRING, "visits": Dtype.INT64, "extra": Dtype.DOUBLE}
REQUIRED = ["x", "segment", "visits"]


def write(path: Path, columns: dict[str, list]) -> Path:
    table = pa.table(columns)
    if path.suffix == ".csv":
        import pyarrow.csv as pcsv

        pcsv.write_csv(table, path)
    else:
        pq.write_table(table, path)
    return path


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_reads_features_labels_and_ids_in_file_order(tmp_path: Path, suffix: str):
    path = write(tmp_path / f"h{suffix}", {
        "entity_id": ["a", "b", "a"], "x": [0.5, 1, -2.0], "segment": ["smb", "retail", "smb"],
        "visits": [3, 4, 5], "label": [1, 0, 1], "unrelated": ["p", "q", "r"],
    })
    history = read_history(path, DTYPES, REQUIRED, classification=True)
    assert len(history) == 3
    assert history.entity_ids == ["a", "b", "a"] and not history.generated_entity_ids
    assert history.features["x"] == [0.5, 1.0, -2.0]
    assert history.features["segment"] == ["smb", "retail", "smb"]
    assert history.features["visits"] == [3, 4, 5]
    assert all(isinstance(v, int) for v in history.features["visits"])
    assert set(history.features) == {"x", "segment", "visits"}  # only the entity's features
    assert history.labels.tolist() == [1.0, 0.0, 1.0]
    assert history.refusals == [None, None, None]
    assert history.event_ms is None and history.drift_rows == []


def test_renamed_columns(tmp_path: Path):
    path = write(tmp_path / "h.csv", {
        "customer": ["7", "8"], "x": [1.0, 2.0], "segment": ["smb", "smb"], "visits": [1, 2],
        "churned": [0, 1], "ts": ["2024-05-01T10:00:00Z", "2024-05-01T10:00:01"],
        "regime": ["old", "new"],
    })
    history = read_history(path, DTYPES, REQUIRED, classification=True,
                           columns=Columns(label="churned", entity="customer", time="ts",
                                           drift="regime"))
    assert history.entity_ids == ["7", "8"]  # text, though they look like numbers
    assert history.labels.tolist() == [0.0, 1.0]
    assert history.event_ms == [1714557600000, 1714557601000]  # a naive time reads as UTC
    assert history.drift_rows == [1]


def test_missing_entity_column_gives_ids_from_the_row_number(tmp_path: Path):
    path = write(tmp_path / "h.parquet", {"x": [1.0, 2.0], "segment": ["a", "b"],
                                          "visits": [1, 2], "label": [0.5, 2.5]})
    history = read_history(path, DTYPES, REQUIRED, classification=False)
    assert history.generated_entity_ids
    assert history.entity_ids == ["row0", "row1"]
    assert history.labels.tolist() == [0.5, 2.5]


def test_rows_that_cannot_be_sent_say_why(tmp_path: Path):
    path = write(tmp_path / "h.parquet", {
        "entity_id": ["a", None, "c", "d", "e"], "x": [1.0, 2.0, None, 4.0, 5.0],
        "segment": ["s"] * 5, "visits": [1, 2, 3, 4, 5], "label": [1, 0, 1, None, 0.5],
    })
    history = read_history(path, DTYPES, REQUIRED, classification=True)
    assert history.refusals == [None, "missing entity id", "missing feature x",
                                "missing label", "label is not a class index"]


def test_a_missing_column_is_an_error_naming_it(tmp_path: Path):
    path = write(tmp_path / "h.parquet", {"x": [1.0], "visits": [1], "label": [1]})
    with pytest.raises(HistoryError, match="'segment'"):
        read_history(path, DTYPES, REQUIRED, classification=True)
    with pytest.raises(HistoryError, match="'target'"):
        read_history(path, {"x": Dtype.DOUBLE}, ["x"], True, Columns(label="target"))


def test_a_column_that_does_not_fit_its_dtype_is_an_error(tmp_path: Path):
    path = write(tmp_path / "h.parquet", {"x": [1.0], "segment": ["s"], "visits": [1.5],
                                          "label": [1]})
    with pytest.raises(HistoryError, match="'visits'"):
        read_history(path, DTYPES, REQUIRED, classification=True)


def test_timestamps_and_epoch_seconds(tmp_path: Path):
    stamps = pa.array([1714557600000, 1714557601500], pa.timestamp("ms", tz="UTC"))
    path = write(tmp_path / "h.parquet", {"x": [1.0, 2.0], "segment": ["s", "s"],
                                          "visits": [1, 2], "label": [0, 1], "event_time": stamps,
                                          "t2": [1714557600.0, 1714557601.25]})
    history = read_history(path, DTYPES, REQUIRED, classification=True)
    assert history.event_ms == [1714557600000, 1714557601500]
    seconds = read_history(path, DTYPES, REQUIRED, True, Columns(time="t2"))
    assert seconds.event_ms == [1714557600000, 1714557601250]


def test_unknown_format_and_missing_file(tmp_path: Path):
    (tmp_path / "h.json").write_text("{}")
    with pytest.raises(HistoryError, match=r"\.parquet or \.csv"):
        read_history(tmp_path / "h.json", DTYPES, REQUIRED, True)
    with pytest.raises(HistoryError, match="no such file"):
        read_history(tmp_path / "nope.csv", DTYPES, REQUIRED, True)


def test_tail_keeps_the_drifts_after_it(tmp_path: Path):
    path = write(tmp_path / "h.parquet", {"x": np.arange(10.0), "segment": ["s"] * 10,
                                          "visits": list(range(10)), "label": [0] * 10,
                                          "drift": [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]})
    history = read_history(path, DTYPES, REQUIRED, classification=True)
    assert history.drift_rows == [3, 6]
    tail = history.tail(4)
    assert len(tail) == 6 and tail.features["x"][0] == 4.0 and tail.drift_rows == [2]
