"""FAISS similarity search over the entities' vectors, one index per entity type.

Redis holds the truth (the newest vector per entity, written by the online store's newer-wins
script); the index mirrors it. An exact `IndexIDMap(IndexFlatL2)` serves until the entity
type has `ivf_min_vectors` real vectors; then an `IndexIVFFlat` is trained on exactly those
stored vectors (never on random data) and takes over. An update replaces the entity's vector
(remove_ids, then add). Distances are squared L2.

Snapshots: written atomically (temp file in the same folder, fsync, os.replace, fsync of the
folder), so a crash leaves the old snapshot or the new one, never a torn file. A snapshot
records each entity's vector version; at start the index is loaded from it and then
reconciled against Redis (vectors written after the snapshot are added, changed ones
replaced, deleted ones removed), so nothing depends on which Kafka offsets it covered. With
no snapshot the index is rebuilt from Redis alone.

When faiss was built with GPU support and a GPU is present, searches run on a GPU replica
of the index, refreshed after changes; mutations stay on the CPU index.
"""

from __future__ import annotations

import json
import logging
import math
import struct
import threading
from collections.abc import Iterable
from pathlib import Path

import faiss
import numpy as np

from flywheel.common.files import atomic_write
from flywheel.features.online_store import StoredVector, Version, supersedes

log = logging.getLogger("flywheel.features.vectors")

_MAGIC = b"FWVECIDX1\n"
_HEADER_LENGTH = struct.Struct("<Q")


def gpu_available() -> bool:
    try:
        return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    except Exception:  # noqa: BLE001 - a CPU build may lack the call entirely
        return False


class VectorIndex:
    """One entity type's index. Thread-safe: the consumer thread writes, gRPC reads."""

    def __init__(
        self, dimension: int, *, ivf_min_vectors: int, nprobe: int = 16, use_gpu: bool = False
    ) -> None:
        self.dimension = dimension
        self.ivf_min_vectors = ivf_min_vectors
        self.nprobe = nprobe
        self._lock = threading.Lock()
        self._int_ids: dict[str, int] = {}
        self._entity_ids: dict[int, str] = {}
        self._vectors: dict[str, np.ndarray] = {}
        self._versions: dict[str, Version] = {}
        self._next_id = 1
        self._index: faiss.Index = faiss.IndexIDMap(faiss.IndexFlatL2(dimension))
        self._quantizer: faiss.Index | None = None
        self._use_gpu = use_gpu
        self._gpu_resources = faiss.StandardGpuResources() if use_gpu else None
        self._gpu_index: faiss.Index | None = None
        self._gpu_stale = True

    # -- state ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._vectors)

    @property
    def kind(self) -> str:
        return "ivf" if self._quantizer is not None else "flat"

    def version_of(self, entity_id: str) -> Version | None:
        return self._versions.get(entity_id)

    def vector_of(self, entity_id: str) -> np.ndarray | None:
        with self._lock:
            vector = self._vectors.get(entity_id)
            return None if vector is None else vector.copy()

    # -- changes ----------------------------------------------------------------------------

    def upsert_many(self, items: Iterable[tuple[str, np.ndarray, Version]]) -> None:
        """Sets each entity's vector; the last item wins where an entity repeats."""
        latest: dict[str, tuple[np.ndarray, Version]] = {}
        for entity_id, vector, version in items:
            latest[entity_id] = (np.asarray(vector, dtype=np.float32), version)
        if not latest:
            return
        with self._lock:
            replaced = [self._int_ids[e] for e in latest if e in self._int_ids]
            if replaced:
                self._index.remove_ids(np.asarray(replaced, dtype=np.int64))
            ids = np.empty(len(latest), dtype=np.int64)
            matrix = np.empty((len(latest), self.dimension), dtype=np.float32)
            for row, (entity_id, (vector, version)) in enumerate(latest.items()):
                int_id = self._int_ids.get(entity_id)
                if int_id is None:
                    int_id = self._assign(entity_id)
                ids[row] = int_id
                matrix[row] = vector
                self._vectors[entity_id] = vector
                self._versions[entity_id] = version
            self._index.add_with_ids(matrix, ids)
            self._gpu_stale = True
            if self._quantizer is None and len(self._vectors) >= self.ivf_min_vectors:
                self._switch_to_ivf()

    def upsert_newer(self, items: Iterable[tuple[str, np.ndarray, Version]]) -> None:
        """Sets the vectors that supersede what the index holds (the newer-wins rule of the
        online store): for a replica indexing events that another replica wrote to Redis,
        which may arrive after a newer vector of the same entity."""
        with self._lock:
            fresh = [(e, v, version) for e, v, version in items
                     if supersedes(version, self._versions.get(e))]
        self.upsert_many(fresh)

    def remove_many(self, entity_ids: Iterable[str]) -> None:
        with self._lock:
            gone = [e for e in entity_ids if e in self._int_ids]
            if not gone:
                return
            self._index.remove_ids(np.asarray([self._int_ids[e] for e in gone], dtype=np.int64))
            for entity_id in gone:
                self._entity_ids.pop(self._int_ids.pop(entity_id))
                self._vectors.pop(entity_id, None)
                self._versions.pop(entity_id, None)
            self._gpu_stale = True

    def reconcile(self, stored: Iterable[StoredVector], batch: int = 1000) -> tuple[int, int]:
        """Makes the index equal to `stored` (Redis); returns (upserted, removed)."""
        seen: set[str] = set()
        pending: list[tuple[str, np.ndarray, Version]] = []
        upserted = 0
        for item in stored:
            seen.add(item.entity_id)
            if self._versions.get(item.entity_id) == item.version:
                continue
            vector = np.frombuffer(item.values, dtype="<f4")
            if vector.shape != (self.dimension,):
                log.warning("stored vector of %s has the wrong size; skipped", item.entity_id)
                continue
            pending.append((item.entity_id, vector, item.version))
            if len(pending) >= batch:
                self.upsert_many(pending)
                upserted += len(pending)
                pending = []
        self.upsert_many(pending)
        upserted += len(pending)
        gone = [e for e in list(self._versions) if e not in seen]
        self.remove_many(gone)
        return upserted, len(gone)

    def _assign(self, entity_id: str) -> int:
        int_id = self._next_id
        self._next_id += 1
        self._int_ids[entity_id] = int_id
        self._entity_ids[int_id] = entity_id
        return int_id

    def _switch_to_ivf(self) -> None:
        """Trains an IVF index on the stored vectors (called with the lock held)."""
        count = len(self._vectors)
        # About 40 training points per list at least (faiss warns below 39).
        nlist = max(1, min(int(4 * math.sqrt(count)), count // 40))
        quantizer = faiss.IndexFlatL2(self.dimension)
        index = faiss.IndexIVFFlat(quantizer, self.dimension, nlist, faiss.METRIC_L2)
        matrix = np.stack(list(self._vectors.values())).astype(np.float32, copy=False)
        ids = np.asarray([self._int_ids[e] for e in self._vectors], dtype=np.int64)
        index.train(matrix)
        index.add_with_ids(matrix, ids)
        index.nprobe = min(self.nprobe, nlist)
        self._index, self._quantizer = index, quantizer
        self._gpu_stale = True
        log.info("vector index switched to IVF", extra={"vectors": count, "nlist": nlist})

    # -- search -----------------------------------------------------------------------------

    def search(self, query: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The k nearest entities to `query` with their squared L2 distances."""
        query = np.asarray(query, dtype=np.float32).reshape(1, self.dimension)
        with self._lock:
            total = self._index.ntotal
            if total == 0:
                return []
            index = self._search_index()
            distances, ids = index.search(query, min(k, total))
            entity_ids = self._entity_ids
            return [
                (entity_ids[int(i)], float(d))
                for i, d in zip(ids[0], distances[0], strict=True)
                if i >= 0 and int(i) in entity_ids
            ]

    def _search_index(self) -> faiss.Index:
        if not self._use_gpu:
            return self._index
        if self._gpu_stale or self._gpu_index is None:
            try:
                self._gpu_index = faiss.index_cpu_to_gpu(self._gpu_resources, 0, self._index)
                self._gpu_stale = False
            except Exception as error:  # noqa: BLE001 - an index type the GPU lacks: use CPU
                log.warning("GPU replica failed (%s); searching on the CPU", error)
                self._use_gpu = False
                return self._index
        return self._gpu_index

    # -- snapshots --------------------------------------------------------------------------

    def write_snapshot(self, path: Path) -> None:
        """Atomically replaces `path` with the current index."""
        with self._lock:
            entity_ids = list(self._vectors)
            header = {
                "dimension": self.dimension,
                "next_id": self._next_id,
                "kind": self.kind,
                "entities": [
                    [e, self._int_ids[e], v.time_ms, v.rank, v.event_id]
                    for e in entity_ids
                    for v in (self._versions[e],)
                ],
            }
            vectors = (
                np.stack([self._vectors[e] for e in entity_ids]).astype("<f4").tobytes()
                if entity_ids else b""
            )
            index_bytes = faiss.serialize_index(self._index).tobytes()
        header["vectors_bytes"] = len(vectors)
        header_bytes = json.dumps(header).encode()
        atomic_write(path, [
            _MAGIC, _HEADER_LENGTH.pack(len(header_bytes)), header_bytes, vectors, index_bytes,
        ])

    @classmethod
    def from_snapshot(
        cls, path: Path, *, dimension: int, ivf_min_vectors: int, nprobe: int = 16,
        use_gpu: bool = False,
    ) -> VectorIndex:
        """The index saved at `path`; ValueError when the file is not a usable snapshot."""
        data = path.read_bytes()
        if not data.startswith(_MAGIC):
            raise ValueError(f"{path} is not a vector index snapshot")
        offset = len(_MAGIC)
        (header_length,) = _HEADER_LENGTH.unpack_from(data, offset)
        offset += _HEADER_LENGTH.size
        header = json.loads(data[offset:offset + header_length])
        offset += header_length
        if header["dimension"] != dimension:
            raise ValueError(f"{path} holds dimension {header['dimension']}, not {dimension}")
        vectors_bytes = header["vectors_bytes"]
        entries = header["entities"]
        vectors = np.frombuffer(data[offset:offset + vectors_bytes], dtype="<f4")
        vectors = vectors.reshape(len(entries), dimension) if entries else vectors
        offset += vectors_bytes
        index = faiss.deserialize_index(np.frombuffer(data[offset:], dtype=np.uint8))
        if index.ntotal != len(entries) or index.d != dimension:
            raise ValueError(f"{path}: index and header disagree")
        loaded = cls(dimension, ivf_min_vectors=ivf_min_vectors, nprobe=nprobe, use_gpu=use_gpu)
        for row, (entity_id, int_id, time_ms, rank, event_id) in enumerate(entries):
            loaded._int_ids[entity_id] = int_id
            loaded._entity_ids[int_id] = entity_id
            loaded._vectors[entity_id] = vectors[row].copy()
            loaded._versions[entity_id] = Version(time_ms, rank, event_id)
        loaded._next_id = header["next_id"]
        loaded._index = index
        if header["kind"] == "ivf":
            ivf = faiss.extract_index_ivf(index)
            loaded._quantizer = ivf.quantizer
            ivf.nprobe = min(nprobe, ivf.nlist)
        return loaded
