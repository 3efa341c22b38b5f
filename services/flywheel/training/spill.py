"""A window's training rows on disk, read back in batches: what lets the `local` engine train
on a window larger than the memory it may hold.

The dataset streams the window's rows out of the Parquet segments into one file of float64
rows (the model's features, in its input order), written once per run and removed when the
run ends. A trainer that can learn from batches (LightGBM through `lightgbm.Sequence`,
XGBoost through `xgboost.DataIter`: `streams = True` on the trainer) reads it batch by batch,
so the process holds one batch of raw rows at a time besides the trainer's own binned copy.
Any other trainer gets the rows as one array (`np.asarray(rows)`), as it would without this.

Reads use `os.pread`, not a memory map: a mapped file's pages stay in the process's resident
set once touched, which is the growth this module is here to avoid.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

DTYPE = np.dtype(np.float64)
# Rows a batch holds by default: 64k rows of 16 features are 8 MiB.
BATCH_ROWS = 65_536


class SpilledRows:
    """Rows [n, n_features] of float64 in a file; array-like for reading (`shape`, `len`,
    slices, `take`, `np.asarray`), written only through `RowSpiller`."""

    def __init__(self, path: Path, rows: int, n_features: int) -> None:
        self.path = Path(path)
        self.shape = (rows, n_features)
        self.dtype = DTYPE
        self.ndim = 2
        self._row_bytes = n_features * DTYPE.itemsize
        self._fd: int | None = os.open(self.path, os.O_RDONLY) if rows else None

    def __len__(self) -> int:
        return self.shape[0]

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) as a fresh array."""
        start, stop = max(start, 0), min(stop, self.shape[0])
        if stop <= start:
            return np.zeros((0, self.shape[1]), dtype=DTYPE)
        want = (stop - start) * self._row_bytes
        raw = os.pread(self._descriptor(), want, start * self._row_bytes)
        if len(raw) != want:
            raise OSError(f"{self.path}: read {len(raw)} of {want} bytes")
        return np.frombuffer(raw, dtype=DTYPE).reshape(stop - start, self.shape[1]).copy()

    def batches(self, rows: int = BATCH_ROWS) -> Iterator[np.ndarray]:
        for start in range(0, self.shape[0], rows):
            yield self.read(start, start + rows)

    def take(self, index: np.ndarray) -> np.ndarray:
        """The rows at `index` (any order), reading each run of neighbouring rows once."""
        index = np.asarray(index, dtype=np.int64)
        out = np.empty((len(index), self.shape[1]), dtype=DTYPE)
        if not len(index):
            return out
        order = np.argsort(index, kind="stable")
        wanted = index[order]
        # Split the sorted indices where the next one is more than one batch away.
        cuts = np.flatnonzero(np.diff(wanted) > BATCH_ROWS) + 1
        for group in np.split(np.arange(len(wanted)), cuts):
            low, high = int(wanted[group[0]]), int(wanted[group[-1]]) + 1
            block = self.read(low, high)
            out[order[group]] = block[wanted[group] - low]
        return out

    def __getitem__(self, key):
        if isinstance(key, slice):
            start, stop, step = key.indices(self.shape[0])
            rows = self.read(start, stop) if step > 0 else self.take(np.arange(start, stop, step))
            return rows[::step] if step > 1 else rows
        if isinstance(key, (int, np.integer)):
            i = int(key) + (self.shape[0] if key < 0 else 0)
            if not 0 <= i < self.shape[0]:
                raise IndexError(f"row {key} of {self.shape[0]}")
            return self.read(i, i + 1)[0]
        return self.take(np.asarray(key))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = self.read(0, self.shape[0])
        return whole if dtype is None else whole.astype(dtype, copy=False)

    def _descriptor(self) -> int:
        if self._fd is None:
            raise ValueError(f"{self.path} is closed")
        return self._fd

    def close(self) -> None:
        """Closes and removes the file (a reader holding it open keeps it until it closes)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.path.unlink(missing_ok=True)

    def __del__(self) -> None:
        try:
            self.close()
        except OSError:
            pass


class RowSpiller:
    """Appends rows to a new spill file in `folder`; `finish()` gives the SpilledRows."""

    def __init__(self, folder: Path, n_features: int) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix="window-", suffix=".f64", dir=folder)
        self._file = os.fdopen(handle, "wb")
        self.path = Path(name)
        self.n_features = n_features
        self.rows = 0

    def write(self, X: np.ndarray) -> None:
        if X.shape[1:] != (self.n_features,):
            raise ValueError(f"rows of {X.shape[1:]} features, the spill holds "
                             f"{self.n_features}")
        self._file.write(np.ascontiguousarray(X, dtype=DTYPE).tobytes())
        self.rows += len(X)

    def finish(self) -> SpilledRows:
        self._file.close()
        return SpilledRows(self.path, self.rows, self.n_features)

    def abort(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)
