"""The `ray` training engine: a run's compute on a Ray cluster (the `ray` extra).

FLYWHEEL_TRAINING_ENGINE=ray and FLYWHEEL_TRAINING_RAY_ADDRESS (`auto`: the cluster this
machine started with `ray start`; `host:port` of a head's GCS; or a `ray://` client address,
e.g. a KubeRay head service) choose it.

- Ray Data reads exactly the window's training rows: the segment files of the lineage's
  partitions, each from the offsets the plan gives (so a record written twice after a
  re-delivery is read once), filtered by the dataset's own rule (flywheel.training.segments:
  the model, non-shadow rows, a label of the model's task, the features the model reads, in
  its order), up to the
  window's last training row: the holdout stays out. Before training, the count and the
  order-free digest of the rows read are checked against the window's: a difference fails
  the run rather than training on other data than the lineage says.
- LightGBM and XGBoost train data-parallel through Ray Train (`LightGBMTrainer` /
  `XGBoostTrainer` with a `train_loop_per_worker`): each worker fits on its shard, the
  libraries' own collective builds one model, rank 0 reports its native text as a checkpoint.
  Fine-tuning continues the champion's booster, as locally.
- Any other trainer (logistic, ridge, mlp, a user's) fits on one Ray worker, as it would
  locally, and its fitted model object travels back through Ray's object store.

The driving part of a run (read, check, fit) runs as one task on the cluster, bounded by
FLYWHEEL_TRAINING_RAY_TIMEOUT_S as a whole (cancelled past it, with what it started): Ray
Data's executor does not run in a Ray Client (`ray://`) process, and a task can be bounded.

The controller gets a model that predicts natively and exports ONNX, and gates, registers
and announces it as for the local engine. The workers import this package: the Ray nodes
run the flywheel image (KubeRay) or the project's environment (`ray start` here).
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from flywheel.common.errors import FailedPrecondition, FlywheelError, Unavailable
from flywheel.training.dataset import SegmentPlan, rows_digest
from flywheel.training.engines import RAY
from flywheel.training.trainers import FittedModel, NativeState, Trainer, TrainingData
from flywheel.training.trainers.base import to_float32_grid

log = logging.getLogger("flywheel.training.ray")

BATCH_ROWS = 65_536
MODEL_FILE = {"lightgbm": "model.txt", "xgboost": "model.json"}


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise FailedPrecondition("FLYWHEEL_TRAINING_ENGINE=ray needs Ray: install the ray "
                                 "extra (pip install 'flywheel-mesh[ray]')") from None
    return ray


class RayEngine:
    name = RAY
    reads_segments = True

    def __init__(self, address: str, workers: int, storage: str, timeout_s: float) -> None:
        self.address = address
        self.workers = workers
        # A URI as it is; a folder made absolute (Ray Train asks for one).
        self.storage = storage if "://" in storage else str(Path(storage).resolve())
        self.timeout_s = timeout_s
        self._lock = threading.Lock()

    def admit(self, rows: int, n_features: int, streams: bool) -> None:
        """A Ray cluster reads and spills the window itself: no local limit."""

    def connect(self) -> None:
        ray = _ray()
        with self._lock:
            if ray.is_initialized():
                return
            try:
                ray.init(address=self.address, namespace="flywheel", log_to_driver=False,
                         logging_level=logging.WARNING, configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as error:
                raise Unavailable(f"the Ray cluster at {self.address} cannot be reached: "
                                  f"{error}") from None

    def fit(self, trainer: Trainer, data: TrainingData, parent: NativeState | None,
            plan: SegmentPlan) -> FittedModel:
        self.connect()
        template = dataclasses.replace(data, X=np.zeros((0, data.n_features)), y=data.y[:0])
        driver = _Driver(self.workers, self.storage, self.timeout_s)
        return self._on_cluster(driver, trainer, template, parent, plan)

    def _on_cluster(self, driver: _Driver, trainer: Trainer, data: TrainingData,
                    parent: NativeState | None, plan: SegmentPlan) -> FittedModel:
        """The run's driving part (read, check, fit) goes to the cluster as one task, and the
        fitted model comes back. Two reasons: through a Ray Client (`ray://`), Ray Data
        cannot execute in this process (its streaming executor needs a driver of the
        cluster's own); and a task can be bounded and cancelled as a whole (Ray ends the
        actors a task owns, Ray Train's among them, when its worker goes), which a `fit()`
        called here could not."""
        ray = _ray()
        reference = ray.remote(num_cpus=0)(_drive).remote(driver, trainer, data, parent, plan)
        try:
            return ray.get(reference, timeout=self.timeout_s)
        except ray.exceptions.GetTimeoutError:
            ray.cancel(reference, force=True, recursive=True)
            raise Unavailable(f"training {trainer.name} on the Ray cluster at {self.address} "
                              f"did not finish within {self.timeout_s:g} s "
                              "(FLYWHEEL_TRAINING_RAY_TIMEOUT_S)") from None
        except ray.exceptions.RayTaskError as error:
            cause = getattr(error, "cause", None)
            if isinstance(cause, FlywheelError):
                raise cause from None
            raise


@dataclasses.dataclass(frozen=True)
class _Driver:
    """The driving part of a run on Ray: Ray Data reads and checks the window, Ray Train (or
    one Ray worker) fits. Runs as a task on the cluster."""

    workers: int
    storage: str
    timeout_s: float

    def fit(self, trainer: Trainer, data: TrainingData, parent: NativeState | None,
            plan: SegmentPlan) -> FittedModel:
        started = time.perf_counter()
        dataset = read_window(plan).materialize()
        rows = dataset.count()
        digest = int(dataset.sum("digest")) if rows else 0
        if (rows, digest) != (plan.expected_rows, plan.expected_digest):
            raise FailedPrecondition(
                f"Ray Data read {rows} training rows of {plan.model_name} from "
                f"{len(plan.slices)} segment slices, the window holds {plan.expected_rows} "
                "(or other rows): the segments do not match the lineage")
        log.info("Ray Data read %d rows of %s in %.1f s", rows, plan.model_name,
                 time.perf_counter() - started)
        if trainer.name in MODEL_FILE:
            return self._data_parallel(trainer, data, parent, dataset)
        return self._one_worker(trainer, data, parent, dataset)

    # -- data-parallel boosted trees ---------------------------------------------------------

    def _data_parallel(self, trainer: Trainer, data: TrainingData, parent: NativeState | None,
                       dataset: Any) -> FittedModel:
        from ray.train import RunConfig, ScalingConfig

        from flywheel.training.trainers.boosted import booster_model

        kind = trainer.name
        config = {"kind": kind, "task": data.task.value, "num_classes": data.num_classes,
                  "params": trainer.params.model_dump(),
                  "parent": (parent.files.get(MODEL_FILE[kind]) if parent else None)}
        if kind == "lightgbm":
            from ray.train.lightgbm import LightGBMTrainer as RayTrainer
        else:
            from ray.train.xgboost import XGBoostTrainer as RayTrainer
        ray_trainer = RayTrainer(
            _boosted_loop, train_loop_config=config, datasets={"train": dataset},
            scaling_config=ScalingConfig(num_workers=self.workers),
            run_config=RunConfig(storage_path=self.storage,
                                 name=f"flywheel-{kind}-{time.time_ns()}"),
        )
        result = ray_trainer.fit()
        if result.checkpoint is None:
            raise FailedPrecondition(f"Ray Train returned no model: {result.error}")
        with result.checkpoint.as_directory() as folder:
            native = (Path(folder) / MODEL_FILE[kind]).read_bytes()
        return booster_model(kind, native, data)

    # -- any other trainer on one worker -----------------------------------------------------

    def _one_worker(self, trainer: Trainer, data: TrainingData, parent: NativeState | None,
                    dataset: Any) -> FittedModel:
        ray = _ray()
        task = ray.remote(num_cpus=1)(_fit_on_worker)
        reference = task.remote(trainer, data, parent, dataset)
        try:
            return ray.get(reference, timeout=self.timeout_s)
        except ray.exceptions.GetTimeoutError:
            ray.cancel(reference, force=True)
            raise Unavailable(f"the Ray worker training {trainer.name} did not finish within "
                              f"{self.timeout_s:g} s (FLYWHEEL_TRAINING_RAY_TIMEOUT_S)") from None


def _drive(driver: _Driver, trainer: Trainer, data: TrainingData, parent: NativeState | None,
           plan: SegmentPlan) -> FittedModel:
    return driver.fit(trainer, data, parent, plan)


# -- reading the window (runs in Ray Data tasks) ---------------------------------------------

def read_window(plan: SegmentPlan) -> Any:
    """A Ray Dataset of the window's training rows: X (the model's features, in its order),
    y, and each row's digest term."""
    ray = _ray()
    paths = sorted({s.path for s in plan.slices})
    if not paths:
        raise FailedPrecondition(f"no segment file holds the window of {plan.model_name}")
    dataset = ray.data.read_parquet(paths, include_paths=True)
    return dataset.map_batches(_select_rows, fn_kwargs={"plan": plan}, batch_format="pyarrow",
                               batch_size=BATCH_ROWS)


def _select_rows(batch: Any, plan: SegmentPlan) -> Any:
    """The training rows of one batch of segment rows (flywheel.training.segments' rule),
    each file's within its slice's offsets, up to the window's last training row."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from flywheel.training.segments import model_rows

    bounds: dict[str, tuple[int, int]] = {s.path: (s.first, s.last) for s in plan.slices}
    X, y, digest = [], [], []
    paths = batch.column("path")
    for path in pc.unique(paths).to_pylist():
        first, last = bounds.get(_local_path(path), (1, 0))
        rows = model_rows(batch.filter(pc.equal(paths, path)), plan.model_name, plan.features,
                          plan.classification, first, last)
        t, p, o = plan.train_until
        upto = (rows.ts < t) | ((rows.ts == t) & ((rows.partition < p)
                                                  | ((rows.partition == p) & (rows.offset <= o))))
        rows = rows.take(rows.eligible & upto)
        X.append(rows.X)
        y.append(rows.label)
        digest.extend(rows_digest([i]) for i in rows.prediction_id)
    width = len(plan.features)
    values = np.concatenate(X) if X else np.zeros((0, width))
    return pa.table({"X": pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), width)
                     .cast(pa.list_(pa.float64())),
                     "y": pa.array(np.concatenate(y) if y else np.zeros(0), type=pa.float64()),
                     "digest": pa.array(digest, type=pa.int64())})


def _local_path(path: str) -> str:
    """Ray Data reports a local file's path without its leading slash on some versions."""
    return path if path.startswith("/") else f"/{path}"


def _arrays(batches: Any) -> tuple[np.ndarray, np.ndarray]:
    X, y = [], []
    for batch in batches:
        if len(batch["y"]):
            X.append(np.stack(batch["X"]).astype(np.float64))
            y.append(np.asarray(batch["y"], dtype=np.float64))
    if not X:
        return np.zeros((0, 0)), np.zeros(0)
    return np.concatenate(X), np.concatenate(y)


# -- what runs on the Ray workers ------------------------------------------------------------

def _fit_on_worker(trainer: Trainer, data: TrainingData, parent: NativeState | None,
                   dataset: Any) -> FittedModel:
    X, y = _arrays(dataset.iter_batches(batch_format="numpy", batch_size=BATCH_ROWS))
    return trainer.fit(dataclasses.replace(data, X=X, y=y), parent)


def _boosted_loop(config: dict) -> None:
    """Ray Train's train_loop_per_worker: this worker's shard, one collective model."""
    import ray.train

    from flywheel.common.spec import Task
    from flywheel.training.trainers.boosted import train_booster

    context = ray.train.get_context()
    shard = ray.train.get_dataset_shard("train")
    X, y = _arrays(shard.iter_batches(batch_format="numpy", batch_size=BATCH_ROWS))
    network = {}
    if config["kind"] == "lightgbm" and context.get_world_size() > 1:
        from ray.train.lightgbm import get_network_params

        network = get_network_params()
    native = train_booster(config["kind"], Task(config["task"]), config["num_classes"],
                           config["params"], to_float32_grid(X), y, config["parent"], network)
    with tempfile.TemporaryDirectory() as folder:
        if context.get_world_rank() == 0:
            (Path(folder) / MODEL_FILE[config["kind"]]).write_bytes(native)
            ray.train.report({"rows": len(y)},
                             checkpoint=ray.train.Checkpoint.from_directory(folder))
        else:
            ray.train.report({"rows": len(y)})
