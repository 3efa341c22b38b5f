"""The FAISS index: updates replace, IVF only from real vectors, snapshots round-trip."""

from __future__ import annotations

import numpy as np
import pytest

from flywheel.features.online_store import StoredVector, Version
from flywheel.features.vector_index import VectorIndex


def _brute(matrix: np.ndarray, query: np.ndarray, k: int) -> list[int]:
    return list(np.argsort(((matrix - query) ** 2).sum(axis=1), kind="stable")[:k])


def _fill(index: VectorIndex, matrix: np.ndarray, time_ms: int = 1) -> None:
    index.upsert_many(
        (f"e{i}", row, Version(time_ms, 0, f"v{i}")) for i, row in enumerate(matrix)
    )


def test_flat_search_matches_brute_force_and_updates_replace() -> None:
    rng = np.random.default_rng(1)
    index = VectorIndex(4, ivf_min_vectors=10_000)
    matrix = rng.normal(size=(200, 4)).astype(np.float32)
    _fill(index, matrix)
    moved = matrix.copy()
    moved[7] = 100.0
    index.upsert_many([("e7", moved[7], Version(2, 0, "x"))])
    assert len(index) == 200 and index.kind == "flat"
    got = index.search(moved[3], 5)
    assert [e for e, _ in got] == [f"e{i}" for i in _brute(moved, moved[3], 5)]
    assert got[0] == ("e3", 0.0)
    assert index.search(np.full(4, 100.0, dtype=np.float32), 1)[0][0] == "e7"
    index.remove_many(["e7"])
    assert len(index) == 199 and "e7" not in [e for e, _ in index.search(moved[7], 199)]
    assert len(index.search(matrix[0], 1_000)) == 199


def test_switches_to_ivf_trained_on_the_stored_vectors(tmp_path) -> None:
    rng = np.random.default_rng(2)
    index = VectorIndex(8, ivf_min_vectors=2_000, nprobe=64)
    matrix = rng.normal(size=(2_500, 8)).astype(np.float32)
    _fill(index, matrix[:1_999])
    assert index.kind == "flat"
    _fill(index, matrix)
    assert index.kind == "ivf" and len(index) == 2_500
    for row in (0, 1_234, 2_499):
        assert index.search(matrix[row], 3)[0][0] == f"e{row}"
    path = tmp_path / "customer.vectors"
    index.write_snapshot(path)
    loaded = VectorIndex.from_snapshot(path, dimension=8, ivf_min_vectors=2_000, nprobe=64)
    assert loaded.kind == "ivf" and len(loaded) == 2_500
    assert loaded.search(matrix[42], 5) == index.search(matrix[42], 5)


def test_snapshot_round_trip_and_reconcile(tmp_path) -> None:
    rng = np.random.default_rng(3)
    matrix = rng.normal(size=(50, 8)).astype(np.float32)
    index = VectorIndex(8, ivf_min_vectors=1_000)
    _fill(index, matrix)
    path = tmp_path / "snap" / "customer.vectors"
    index.write_snapshot(path)
    assert [p.name for p in path.parent.iterdir()] == ["customer.vectors"]  # no temp left
    loaded = VectorIndex.from_snapshot(path, dimension=8, ivf_min_vectors=1_000)
    assert loaded.search(matrix[9], 4) == index.search(matrix[9], 4)
    # Redis moved on after the snapshot: e0 changed, e1 deleted, e99 added.
    stored = [
        StoredVector(f"e{i}", Version(1, 0, f"v{i}"), matrix[i].astype("<f4").tobytes())
        for i in range(2, 50)
    ]
    stored.append(StoredVector("e0", Version(5, 0, "n"), np.full(8, 9, "<f4").tobytes()))
    stored.append(StoredVector("e99", Version(5, 0, "m"), np.full(8, -9, "<f4").tobytes()))
    assert loaded.reconcile(stored) == (2, 1)
    assert len(loaded) == 50
    assert loaded.search(np.full(8, 9, np.float32), 1)[0][0] == "e0"
    assert loaded.search(np.full(8, -9, np.float32), 1)[0][0] == "e99"
    assert loaded.vector_of("e1") is None


def test_a_bad_snapshot_is_refused(tmp_path) -> None:
    path = tmp_path / "x.vectors"
    path.write_bytes(b"garbage")
    with pytest.raises(ValueError):
        VectorIndex.from_snapshot(path, dimension=8, ivf_min_vectors=10)


def test_empty_index_search() -> None:
    assert VectorIndex(8, ivf_min_vectors=10).search(np.zeros(8, np.float32), 3) == []
