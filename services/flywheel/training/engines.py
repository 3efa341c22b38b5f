"""Where a run's training compute happens: the engine sits exactly where the runner used to
call `trainer.fit`, so everything around it (the window and its lineage, the ONNX export,
parity, the gate, registration, promotion and announcement) stays in the controller and is
the same whichever engine trained.

- `local` (default): the trainer fits in the training service's own process. The window's
  training rows are streamed from the segments to a spill file (flywheel.training.dataset);
  a trainer that learns from batches (LightGBM, XGBoost) reads them a batch at a time, so
  the process holds the trainer's own binned copy and not the rows; any other trainer gets
  them as one array. Before the window is built, `admit` refuses one that would not fit in
  the memory the service may use (FLYWHEEL_TRAINING_LOCAL_MAX_BYTES), with an error that
  names the `ray` engine, instead of the kernel killing the service half way.
- `ray` (flywheel.training.ray_engine): Ray Data reads exactly the window's segment files,
  Ray Train fits on the cluster, the model comes back to the controller.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from flywheel.common.errors import FailedPrecondition
from flywheel.training.dataset import SegmentPlan
from flywheel.training.trainers import FittedModel, NativeState, Trainer, TrainingData

LOCAL, RAY = "local", "ray"
# A trainer that takes the rows as one array: copies of the feature matrix alive at once
# (the array, a float32-rounded or scaled copy, the trainer's own).
LOCAL_COPIES = 3
BYTES_PER_VALUE = 8
# A trainer that reads batches: a byte per feature and row (the binned copy: at most 256
# bins a feature), and per row its label as we hold it (8), the trainer's label, gradient,
# hessian (4 each) and score (8).
STREAMED_BYTES_PER_ROW = 8 + 4 + 4 + 4 + 8


class Engine(Protocol):
    name: str
    # True: the engine reads the window's training rows from the segments itself (the
    # controller does not spill them).
    reads_segments: bool

    def admit(self, rows: int, n_features: int, streams: bool) -> None:
        """Raises FailedPrecondition when a window of this size cannot be trained here
        (`streams`: the trainer reads the rows in batches)."""
        ...

    def fit(self, trainer: Trainer, data: TrainingData, parent: NativeState | None,
            plan: SegmentPlan) -> FittedModel:
        """The trainer's model fitted on the window's training rows (`data` in memory, or
        `plan`'s segment files for an engine that reads them itself)."""
        ...


class LocalEngine:
    name = LOCAL
    reads_segments = False

    def __init__(self, max_bytes: int = 0) -> None:
        """`max_bytes`: what a run's arrays may take (0: half the memory available now)."""
        self.max_bytes = max_bytes or available_memory() // 2

    def admit(self, rows: int, n_features: int, streams: bool) -> None:
        needed = window_bytes(rows, n_features, streams)
        if needed > self.max_bytes:
            raise FailedPrecondition(
                f"a window of {rows} examples x {n_features} features needs about "
                f"{needed / 2**30:.1f} GiB to train locally, over the "
                f"{self.max_bytes / 2**30:.1f} GiB this service may use "
                "(FLYWHEEL_TRAINING_LOCAL_MAX_BYTES): train it on a Ray cluster with "
                "FLYWHEEL_TRAINING_ENGINE=ray, or make training.window smaller")

    def fit(self, trainer: Trainer, data: TrainingData, parent: NativeState | None,
            plan: SegmentPlan) -> FittedModel:
        return trainer.fit(data, parent)


def window_bytes(rows: int, n_features: int, streams: bool) -> int:
    """What training a window of this size takes in this process."""
    if streams:
        return rows * (n_features + STREAMED_BYTES_PER_ROW)
    return rows * n_features * BYTES_PER_VALUE * LOCAL_COPIES


def available_memory() -> int:
    """The memory this process may still take: the cgroup's limit less its use where one is
    set (a container), else MemAvailable."""
    cgroup = Path("/sys/fs/cgroup")
    try:
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            used = int((cgroup / "memory.current").read_text())
            return max(int(limit) - used, 0)
    except (OSError, ValueError):
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
