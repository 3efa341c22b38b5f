"""One training run: dataset -> train -> export -> evaluate -> register -> promote.

Each stage is timed (`stage_seconds`). Candidate and champion are scored with ONNX Runtime
on the same holdout (the most recent examples of the window); the gate decides; the version
is registered either way, with its metrics, parent, feature names, sha256, trigger reason and
lineage (the exact partitions and offset ranges of its window), and announced.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from flywheel.common.errors import ArtifactRejected, FailedPrecondition, NotFound
from flywheel.common.registry import CHAMPION, ModelRegistry, sha256_file
from flywheel.common.spec import FlywheelSpec, ModelSpec, Task
from flywheel.training.dataset import Dataset, Window
from flywheel.training.gate import GateDecision, decide, metric
from flywheel.training.promotions import Promotions
from flywheel.training.trainer import OnnxScorer, Trainer
from flywheel.v1 import common_pb2

log = logging.getLogger("flywheel.training.runner")

TASKS = {
    Task.BINARY_CLASSIFICATION: common_pb2.MODEL_TASK_BINARY_CLASSIFICATION,
    Task.MULTICLASS_CLASSIFICATION: common_pb2.MODEL_TASK_MULTICLASS_CLASSIFICATION,
    Task.REGRESSION: common_pb2.MODEL_TASK_REGRESSION,
}
QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"
# A run that was queued or running when the training service stopped.
INTERRUPTED = "interrupted"


@dataclass
class Candidate:
    """One model a run trained and gated (best_of trains two: scratch and fine_tune)."""

    mode: str
    metric: str
    score: float
    passed: bool
    decision: str
    version: int = 0  # 0: not registered


@dataclass
class TrainingRun:
    model_name: str
    trigger_reason: str
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    state: str = QUEUED
    started_at: float = 0.0
    finished_at: float = 0.0
    candidate_version: int = 0
    parent_version: int = 0
    gate: GateDecision | None = None
    promoted: bool = False
    promoted_alias: str = ""
    ranges: list[tuple[str, int, int, int]] = field(default_factory=list)
    training_examples: int = 0
    holdout_examples: int = 0
    error: str = ""
    stage_seconds: dict[str, float] = field(default_factory=dict)
    # The training.mode asked for, the trainer used, and every candidate trained.
    mode: str = ""
    trainer: str = ""
    candidates: list[Candidate] = field(default_factory=list)
    # The prediction ids of the window, in order (not persisted; for checks and tests).
    dataset_ids: list[str] = field(default_factory=list, repr=False)

    def lineage(self) -> common_pb2.Lineage:
        return common_pb2.Lineage(
            training_data=[common_pb2.OffsetRange(topic=t, partition=p, start_offset=a,
                                                  end_offset=b) for t, p, a, b in self.ranges],
            parent_version=self.parent_version, training_run_id=self.run_id,
            trigger_reason=self.trigger_reason, training_examples=self.training_examples,
            holdout_examples=self.holdout_examples,
        )


class Runner:
    def __init__(self, *, spec: FlywheelSpec, dataset: Dataset, registry: ModelRegistry,
                 promotions: Promotions, trainer: Trainer, promote_to: str = CHAMPION,
                 onnx_threads: int = 1,
                 progress: Callable[[TrainingRun], None] | None = None) -> None:
        self._spec = spec
        self._dataset = dataset
        self._registry = registry
        self._promotions = promotions
        self._trainer = trainer
        self._promote_to = promote_to
        self._threads = onnx_threads
        # Told when a run starts, after each stage and at its end (the run store records it);
        # never raises.
        self._progress = progress or (lambda run: None)

    @contextmanager
    def _stage(self, run: TrainingRun, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            run.stage_seconds[name] = time.perf_counter() - start
            self._progress(run)

    def run(self, run: TrainingRun) -> TrainingRun:
        run.state, run.started_at = RUNNING, time.time()
        self._progress(run)
        try:
            self._run(run, self._spec.model(run.model_name))
            run.state = SUCCEEDED
        except Exception as error:
            run.state, run.error = FAILED, str(error) or type(error).__name__
            log.warning("training run %s failed: %s", run.run_id, run.error,
                        exc_info=not isinstance(error, FailedPrecondition))
        run.finished_at = time.time()
        self._progress(run)
        return run

    def _run(self, run: TrainingRun, spec: ModelSpec) -> None:
        with self._stage(run, "dataset"):
            window = self._dataset.window(spec.name, spec.training.window,
                                          spec.training.holdout_fraction)
            self._check(window, spec)
            run.ranges, run.dataset_ids = window.ranges, window.prediction_ids
            run.training_examples, run.holdout_examples = len(window.y_train), len(window.y_holdout)
        with self._stage(run, "train"):
            model = self._trainer.fit(window.X_train, window.y_train, spec.task)
        with self._stage(run, "export"):
            artifact = self._trainer.to_onnx(model, window.X_train.shape[1])
        with self._stage(run, "evaluate"):
            metrics, champion, outputs = self._evaluate(artifact, window, spec)
            run.parent_version = champion
            run.gate = decide(spec.gate, spec.gate_metric, metrics[spec.gate_metric],
                              metrics.get(f"champion_{spec.gate_metric}"), len(window.y_holdout))
        with self._stage(run, "register"):
            version = self._registry.register(
                spec.name, artifact, task=TASKS[spec.task], entity_type=spec.entity_type,
                feature_names=list(spec.features),
                output_names=outputs,
                metrics=metrics, lineage=run.lineage(),
            )
            run.candidate_version = version.version
            self._promotions.registered(spec.name, version.version,
                                        f"run {run.run_id}: {run.trigger_reason}")
        with self._stage(run, "promote"):
            if run.gate.passed:
                alias = CHAMPION if not champion else self._promote_to
                self._promotions.promote(spec.name, version.version, alias,
                                         f"run {run.run_id}: {run.gate.decision}")
                run.promoted, run.promoted_alias = alias == CHAMPION, alias
        log.info("training run %s: v%d %s", run.run_id, run.candidate_version,
                 run.gate.decision, extra={"stage_seconds": run.stage_seconds})

    def _check(self, window: Window, spec: ModelSpec) -> None:
        total = len(window.y_train) + len(window.y_holdout)
        if total < spec.training.min_examples:
            raise FailedPrecondition(f"{total} labeled examples of {spec.name}; a run needs "
                                     f"min_examples={spec.training.min_examples}")
        if spec.task.is_classification and len(np.unique(window.y_train)) < 2:
            raise FailedPrecondition("the training window holds a single class")

    def _evaluate(self, artifact: bytes, window: Window, spec: ModelSpec
                  ) -> tuple[dict[str, float], int, list[str]]:
        """Candidate and champion metrics on the same holdout; returns them, the champion's
        version (0: none) and the candidate's output names."""
        names = ["accuracy", "f1"] if spec.task.is_classification else ["rmse", "mae"]
        if spec.gate_metric not in names:
            names.append(spec.gate_metric)
        y = window.y_holdout
        out: dict[str, float] = {"training_examples": float(len(window.y_train)),
                                 "holdout_examples": float(len(y))}
        candidate = OnnxScorer(artifact, self._threads)
        outputs = [o.name for o in candidate.session.get_outputs()]
        scores = candidate.score(window.X_holdout)
        for name in names:
            out[name] = metric(name, y, scores.predicted, scores.probabilities)
        champion = self._champion_scorer(spec)
        if champion is None:
            return out, 0, outputs
        version, scorer, columns = champion
        scores = scorer.score(window.X_holdout[:, columns])
        for name in names:
            out[f"champion_{name}"] = metric(name, y, scores.predicted, scores.probabilities)
        return out, version, outputs

    def _champion_scorer(self, spec: ModelSpec) -> tuple[int, OnnxScorer, list[int]] | None:
        try:
            current = self._registry.resolve(spec.name, CHAMPION)
        except NotFound:
            return None
        path = self._registry.artifact_path(current)
        if sha256_file(path) != current.sha256:
            raise ArtifactRejected(f"champion v{current.version} artifact does not match its "
                                   "sha256")
        position = {n: i for i, n in enumerate(spec.features)}
        missing = [n for n in current.feature_names if n not in position]
        if missing:
            raise FailedPrecondition(f"champion v{current.version} reads features the spec no "
                                     f"longer has: {missing}")
        columns = [position[n] for n in current.feature_names]
        return current.version, OnnxScorer(path.read_bytes(), self._threads), columns
