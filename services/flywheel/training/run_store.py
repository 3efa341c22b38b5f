"""Training runs on disk, so that they outlive the training service.

    <data_dir>/runs/<run_id>.json    {"format": 1, "sequence": n, "run": {...TrainingRun}}

A run's file is rewritten atomically at each change (queued, running, each finished stage,
the outcome). `sequence` orders runs by when they were queued, independent of clocks. The
record holds every field of `TrainingRun` but its window's prediction ids; on load, unknown
keys are ignored and missing ones take their defaults, so records written by an older or a
newer service still read. A run found queued or running was cut short by a stop of the
service: it reads interrupted, with the version it had registered if it got that far.
Only the newest `keep` runs are kept.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from flywheel.common.errors import FlywheelError
from flywheel.common.files import atomic_write_json
from flywheel.common.registry import ModelRegistry
from flywheel.training.runner import INTERRUPTED, QUEUED, RUNNING, TrainingRun

log = logging.getLogger("flywheel.training.runs")

FORMAT = 1
# Fields of TrainingRun that stay in memory only.
TRANSIENT = frozenset({"dataset_ids", "dataset_traces"})
ACTIVE = (QUEUED, RUNNING)

_RUN = TypeAdapter(TrainingRun)


def to_record(run: TrainingRun) -> dict:
    return _RUN.dump_python(run, mode="json", exclude=set(TRANSIENT))


def from_record(record: dict) -> TrainingRun:
    """Rebuilds the run with its nested gate and candidates; raises ValueError when the
    record is not a run."""
    if not isinstance(record, dict):
        raise ValueError(f"a run record is an object, not {type(record).__name__}")
    try:
        return _RUN.validate_python({k: v for k, v in record.items() if k not in TRANSIENT})
    except ValidationError as error:
        raise ValueError(str(error)) from None


class RunStore:
    """Thread-safe: the event loop saves new runs, the run's worker thread its progress."""

    def __init__(self, folder: Path, keep: int, registry: ModelRegistry | None = None) -> None:
        if keep < 1:
            raise ValueError("a run store keeps at least one run")
        self.folder = Path(folder)
        self._keep = keep
        self._registry = registry
        self._lock = threading.Lock()
        # run_id -> (sequence, state), in sequence order.
        self._index: dict[str, tuple[int, str]] = {}
        self._next = 1

    def load(self) -> list[TrainingRun]:
        """Past runs, oldest first. A run left queued or running is marked interrupted and
        saved so; leftovers of writes cut short are removed; the oldest runs beyond `keep`
        are dropped."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for leftover in self.folder.glob(".*.tmp"):
            leftover.unlink(missing_ok=True)
        found = sorted(self._read_all(), key=lambda item: item[0])
        with self._lock:
            self._index = {run.run_id: (sequence, run.state) for sequence, run in found}
            self._next = max((s for s, _ in found), default=0) + 1
        runs = []
        for _, run in found:
            if run.state in ACTIVE:
                self._interrupt(run)
                self.save(run)
            runs.append(run)
        dropped = set(self._prune())
        return [run for run in runs if run.run_id not in dropped]

    def save(self, run: TrainingRun) -> list[str]:
        """Writes the run's record; returns the ids of old runs dropped to make room."""
        with self._lock:
            sequence = self._index.get(run.run_id, (self._next, ""))[0]
            self._next = max(self._next, sequence + 1)
            atomic_write_json(self._path(run.run_id),
                              {"format": FORMAT, "sequence": sequence, "run": to_record(run)})
            new = run.run_id not in self._index
            self._index[run.run_id] = (sequence, run.state)
        return self._prune() if new else []

    def checkpoint(self, run: TrainingRun) -> None:
        """Saves a run's progress; a failed write is logged, not raised, so that the run
        goes on (its next write tries again)."""
        try:
            self.save(run)
        except OSError:
            log.exception("could not record the progress of training run %s", run.run_id)

    def __len__(self) -> int:
        return len(self._index)

    # -- internals ---------------------------------------------------------------------------

    def _path(self, run_id: str) -> Path:
        return self.folder / f"{run_id}.json"

    def _read_all(self) -> list[tuple[int, TrainingRun]]:
        found = []
        for path in self.folder.glob("*.json"):
            try:
                record = json.loads(path.read_text())
                found.append((int(record["sequence"]), from_record(record["run"])))
            except (OSError, ValueError, KeyError, TypeError) as error:
                # Kept on disk for a person to look at; the service starts without it.
                log.warning("skipping unreadable training run record %s: %s", path, error)
        return found

    def _prune(self) -> list[str]:
        """Drops the oldest finished runs beyond `keep` (never a queued or running one)."""
        with self._lock:
            excess = len(self._index) - self._keep
            if excess <= 0:
                return []
            dropped = [run_id for run_id, (_, state) in self._index.items()
                       if state not in ACTIVE][:excess]
            for run_id in dropped:
                self._path(run_id).unlink(missing_ok=True)
                del self._index[run_id]
        return dropped

    def _interrupt(self, run: TrainingRun) -> None:
        was = run.state
        run.state = INTERRUPTED
        run.error = f"interrupted: the training service stopped while the run was {was}"
        registered = self._registered_versions(run)
        if registered:
            run.candidate_version = max(registered)
            run.error += "; it had registered " + ", ".join(f"v{v}" for v in registered)

    def _registered_versions(self, run: TrainingRun) -> list[int]:
        """The versions whose lineage names this run: the registry writes a version whole
        or not at all, so a run stopped after that step did leave them."""
        if self._registry is None:
            return []
        try:
            versions = self._registry.versions(run.model_name)
        except (FlywheelError, OSError, ValueError) as error:
            log.warning("could not look up the versions of interrupted run %s: %s",
                        run.run_id, error)
            return []
        return [v.version for v in versions if v.lineage.training_run_id == run.run_id]
