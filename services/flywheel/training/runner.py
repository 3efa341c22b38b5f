"""One training run: dataset -> train -> export -> parity -> evaluate -> register -> promote.

The model's spec names the trainer and the mode:
- scratch: a new model on the recent window;
- fine_tune: the champion's native state continued on the recent window (a champion with no
  native state of this trainer, e.g. one brought as ONNX only, is trained from scratch and
  the run says why in its lineage's mode_note);
- best_of: both candidates in one run, each gated against the champion on the same holdout;
  the better one that passes is registered and promoted (the better one of the two when none
  passes), and the run records both scores.

Every candidate's ONNX export is checked against the native model on the holdout (parity);
one past `training.parity_tolerance` is refused with the figure. Candidate and champion are
scored with ONNX Runtime on the same holdout (the most recent examples of the window); the
gate decides; the version is registered either way, with its metrics, parent, feature names,
vocabularies, native state, sha256, trigger reason and lineage (the exact partitions and
offset ranges of its window, the mode and the version it continued), and announced.

Traced as one trace per run (a span per stage), linked to the trace of every labeled example
of its window (up to `trace_max_links` distinct traces): a run is not made a part of the
thousands of prediction traces it learned from. Its announcements carry the run's trace on,
so the swap in inference is part of it.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from flywheel.common import tracing
from flywheel.common.errors import FailedPrecondition, NotFound
from flywheel.common.registry import CHAMPION, ModelRegistry
from flywheel.common.spec import FlywheelSpec, ModelSpec, Task, TrainingMode
from flywheel.training.dataset import Dataset, SegmentPlan, Window
from flywheel.training.engines import Engine, LocalEngine
from flywheel.training.gate import GateDecision, decide, metric
from flywheel.training.metrics import RUNS, STAGE_SECONDS
from flywheel.training.parity import compare
from flywheel.training.promotions import Promotions
from flywheel.training.scoring import OnnxScorer, VersionScorer, open_version
from flywheel.training.trainers import FittedModel, NativeState, Trainer, TrainingData
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
NATIVE_FOLDER = "native"
SCRATCH, FINE_TUNE = TrainingMode.SCRATCH.value, TrainingMode.FINE_TUNE.value


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
    # How the registered version was trained, and whose native state it continued.
    training_mode: str = ""
    continued_from: int = 0
    mode_note: str = ""
    # The engine that trained it, and the digest of the rows it trained on (dataset.rows_digest).
    engine: str = ""
    trained_rows_digest: int = 0
    # Reads the prediction ids of the window back (not persisted; for checks and tests:
    # a large window's ids are not held in memory).
    dataset_ids: Callable[[], list[str]] | None = field(default=None, repr=False)
    # The distinct traceparents of its examples (not persisted; the run's trace links them).
    dataset_traces: list[str] = field(default_factory=list, repr=False)

    def prediction_ids(self) -> list[str]:
        """The window's prediction ids, training rows then holdout."""
        return self.dataset_ids() if self.dataset_ids else []

    def lineage(self) -> common_pb2.Lineage:
        return common_pb2.Lineage(
            training_data=[common_pb2.OffsetRange(topic=t, partition=p, start_offset=a,
                                                  end_offset=b) for t, p, a, b in self.ranges],
            parent_version=self.parent_version, training_run_id=self.run_id,
            trigger_reason=self.trigger_reason, training_examples=self.training_examples,
            holdout_examples=self.holdout_examples, training_mode=self.training_mode,
            continued_from_version=self.continued_from, mode_note=self.mode_note,
            trainer=self.trainer,
        )


@dataclass
class _Champion:
    version: int
    meta: common_pb2.ModelVersion
    scorer: VersionScorer
    native: NativeState | None  # None: nothing this trainer can continue
    why_not_native: str


@dataclass
class _Trained:
    mode: str
    model: FittedModel
    artifact: bytes
    continued_from: int
    note: str
    metrics: dict[str, float]
    gate: GateDecision | None = None
    refused: str = ""  # why it cannot be registered (parity)


class Runner:
    def __init__(self, *, spec: FlywheelSpec, dataset: Dataset, registry: ModelRegistry,
                 promotions: Promotions, trainers: Mapping[str, Trainer],
                 promote_to: str = CHAMPION, onnx_threads: int = 1,
                 progress: Callable[[TrainingRun], None] | None = None,
                 engine: Engine | None = None,
                 guard: Callable[[], None] | None = None) -> None:
        self._spec = spec
        self._dataset = dataset
        self._registry = registry
        self._promotions = promotions
        self._trainers = trainers
        self._promote_to = promote_to
        self._threads = onnx_threads
        # Told when a run starts, after each stage and at its end (the run store records it);
        # never raises.
        self._progress = progress or (lambda run: None)
        self.engine = engine or LocalEngine()
        # Called right before the registry is written; raises when this service may no
        # longer write it (the controller lease was lost).
        self._guard = guard or (lambda: None)

    @contextmanager
    def _stage(self, run: TrainingRun, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            with tracing.span(name):
                yield
        finally:
            took = time.perf_counter() - start
            run.stage_seconds[name] = run.stage_seconds.get(name, 0.0) + took
            STAGE_SECONDS.labels(run.model_name, name).observe(took)
            self._progress(run)

    def run(self, run: TrainingRun) -> TrainingRun:
        run.state, run.started_at = RUNNING, time.time()
        self._progress(run)
        try:
            with tracing.root("training run", {"flywheel.run_id": run.run_id,
                                               "flywheel.model": run.model_name,
                                               "flywheel.trigger": run.trigger_reason}) as span:
                try:
                    self._run(run, self._spec.model(run.model_name))
                finally:
                    tracing.link(span, run.dataset_traces)
                    tracing.annotate(span, {"flywheel.model.version": run.candidate_version,
                                            "flywheel.promoted": run.promoted})
            run.state = SUCCEEDED
        except Exception as error:
            run.state, run.error = FAILED, str(error) or type(error).__name__
            log.warning("training run %s failed: %s", run.run_id, run.error,
                        exc_info=not isinstance(error, FailedPrecondition))
        run.finished_at = time.time()
        RUNS.labels(run.model_name, run.state).inc()
        self._progress(run)
        return run

    def _run(self, run: TrainingRun, spec: ModelSpec) -> None:
        trainer = self._trainers[spec.name]
        run.mode, run.trainer, run.engine = spec.training.mode.value, trainer.name, self.engine.name
        streams = getattr(trainer, "streams", False)
        with self._stage(run, "dataset"):
            self.engine.admit(min(spec.training.window, self._dataset.total(spec.name)),
                              len(spec.features), streams)
            window = self._dataset.window(spec.name, spec.training.window,
                                          spec.training.holdout_fraction,
                                          spill=not self.engine.reads_segments)
        try:
            self._train_window(run, spec, trainer, window, streams)
        finally:
            window.close()

    def _train_window(self, run: TrainingRun, spec: ModelSpec, trainer: Trainer,
                      window: Window, streams: bool) -> None:
        with self._stage(run, "dataset"):
            self._check(window, spec)
            run.ranges, run.dataset_ids = window.ranges, window.prediction_ids
            run.dataset_traces = window.traceparents
            run.training_examples, run.holdout_examples = len(window.y_train), len(window.y_holdout)
            data = self._training_data(window, spec, streams)
            plan = self._dataset.plan(spec, window)
            run.trained_rows_digest = plan.expected_digest
        champion = self._champion(spec, trainer)
        run.parent_version = champion.version if champion else 0
        modes = self._modes(spec)
        collapsed = ""
        if len(modes) > 1 and (champion is None or champion.native is None):
            # best_of with nothing to continue: its two candidates would be one.
            modes = [SCRATCH]
            collapsed = ("best_of trained scratch only: " + (
                champion.why_not_native if champion else "no champion to continue"))
        trained = [self._train(run, spec, trainer, data, window, plan, champion, mode)
                   for mode in modes]
        with self._stage(run, "evaluate"):
            newer = self._is_newer(window, champion)
            for candidate in trained:
                if candidate.refused:
                    continue
                self._evaluate(candidate, window, spec, champion)
                candidate.gate = decide(spec.gate, spec.gate_metric,
                                        candidate.metrics[spec.gate_metric],
                                        candidate.metrics.get(f"champion_{spec.gate_metric}"),
                                        len(window.y_holdout), newer=newer)
        chosen = self._choose(trained, spec)
        run.candidates = [self._candidate(c, spec) for c in trained]
        if chosen is None:
            raise FailedPrecondition("; ".join(f"{c.mode}: {c.refused}" for c in trained))
        run.gate = chosen.gate
        run.training_mode = FINE_TUNE if chosen.continued_from else SCRATCH
        run.continued_from, run.mode_note = chosen.continued_from, chosen.note or collapsed
        with self._stage(run, "register"):
            self._guard()
            metrics = dict(chosen.metrics)
            if len(trained) > 1:  # best_of: both scores stay with the version
                for other in trained:
                    if not other.refused:
                        metrics[f"{other.mode}_{spec.gate_metric}"] = other.metrics[
                            spec.gate_metric]
            version = self._register(run, spec, chosen, metrics)
            run.candidate_version = version
            for candidate in run.candidates:
                if candidate.mode == chosen.mode:
                    candidate.version = version
            self._promotions.registered(spec.name, version,
                                        f"run {run.run_id}: {run.trigger_reason}")
        with self._stage(run, "promote"):
            if run.gate.passed:
                self._guard()
                alias = CHAMPION if not champion else self._promote_to
                self._promotions.promote(spec.name, version, alias,
                                         f"run {run.run_id}: {run.gate.decision}")
                run.promoted, run.promoted_alias = alias == CHAMPION, alias
        log.info("training run %s: v%d (%s, %s) %s", run.run_id, run.candidate_version,
                 trainer.name, chosen.mode, run.gate.decision,
                 extra={"stage_seconds": run.stage_seconds})

    # -- training ----------------------------------------------------------------------------

    @staticmethod
    def _modes(spec: ModelSpec) -> list[str]:
        mode = spec.training.mode
        if mode is TrainingMode.BEST_OF:
            return [SCRATCH, FINE_TUNE]
        return [mode.value]

    def _training_data(self, window: Window, spec: ModelSpec, streams: bool) -> TrainingData:
        """The window's training rows as the trainer takes them: a trainer that learns from
        batches reads the spilled rows; any other gets them as one array."""
        vocabularies = self._spec.vocabularies(spec)
        categorical = {i: len(vocabularies[n]) + 1 for i, n in enumerate(spec.features)
                       if n in vocabularies}
        X = window.X_train if streams else np.asarray(window.X_train)
        return TrainingData(X, window.y_train, spec.task, tuple(spec.features),
                            categorical, spec.num_classes)

    def _train(self, run: TrainingRun, spec: ModelSpec, trainer: Trainer, data: TrainingData,
               window: Window, plan: SegmentPlan, champion: _Champion | None,
               mode: str) -> _Trained:
        parent, continued_from, note = None, 0, ""
        if mode == FINE_TUNE:
            if champion is None:
                note = "no champion to continue: trained from scratch"
            elif champion.native is None:
                note = f"{champion.why_not_native}: trained from scratch"
            else:
                parent, continued_from = champion.native, champion.version
        with self._stage(run, "train"):
            model = self.engine.fit(trainer, data, parent, plan)
        with self._stage(run, "export"):
            artifact = model.to_onnx()
        with self._stage(run, "parity"):
            native = model.predict(window.X_holdout)
            exported = OnnxScorer(artifact, self._threads,
                                  classifier=spec.task.is_classification).score(window.X_holdout)
            parity = compare(native, exported, window.y_holdout, spec.task.is_classification)
        tolerance = spec.training.parity_tolerance
        refused = "" if parity.passed(tolerance) else parity.describe(tolerance)
        if note:
            log.info("training run %s: %s", run.run_id, note)
        return _Trained(mode, model, artifact, continued_from, note,
                        {"parity_max_difference": parity.max_difference}, refused=refused)

    # -- evaluation and choice ---------------------------------------------------------------

    def _evaluate(self, candidate: _Trained, window: Window, spec: ModelSpec,
                  champion: _Champion | None) -> None:
        """Candidate and champion metrics on the same holdout, into candidate.metrics."""
        names = (["accuracy", "f1", "log_loss"] if spec.task.is_classification
                 else ["rmse", "mae"])
        if spec.gate_metric not in names:
            names.append(spec.gate_metric)
        y = window.y_holdout
        out = candidate.metrics
        out.update({"training_examples": float(len(window.y_train)),
                    "holdout_examples": float(len(y))})
        scores = OnnxScorer(candidate.artifact, self._threads,
                            classifier=spec.task.is_classification).score(window.X_holdout)
        for name in names:
            out[name] = _safe_metric(name, y, scores)
        if champion is not None:
            scores = champion.scorer.score(window.X_holdout)
            for name in names:
                out[f"champion_{name}"] = _safe_metric(name, y, scores)

    @staticmethod
    def _choose(trained: list[_Trained], spec: ModelSpec) -> _Trained | None:
        """The better candidate that passed its gate; else the better one; None when every
        candidate was refused before the gate."""
        usable = [c for c in trained if not c.refused]
        if not usable:
            return None
        higher = spec.gate_metric not in ("log_loss", "rmse", "mae")

        def key(c: _Trained) -> tuple[bool, float]:
            score = c.metrics.get(spec.gate_metric, float("nan"))
            score = score if np.isfinite(score) else -np.inf if higher else np.inf
            return (c.gate.passed, score if higher else -score)

        return max(usable, key=key)

    @staticmethod
    def _candidate(c: _Trained, spec: ModelSpec) -> Candidate:
        if c.refused:
            return Candidate(c.mode, spec.gate_metric, float("nan"), False,
                             f"refused: {c.refused}")
        return Candidate(c.mode, spec.gate_metric, c.metrics.get(spec.gate_metric, float("nan")),
                         c.gate.passed, c.gate.decision)

    @staticmethod
    def _is_newer(window: Window, champion: _Champion | None) -> bool:
        """Whether the window reaches past the data the champion learned from (a champion
        brought from elsewhere has none): what lets a tie pass the gate."""
        if champion is None:
            return True
        ranges = champion.meta.lineage.training_data
        if not ranges:
            return True
        learned = {r.partition: r.end_offset for r in ranges}
        return any(last > learned.get(partition, -1) for _, partition, _, last in window.ranges)

    # -- registry ----------------------------------------------------------------------------

    def _register(self, run: TrainingRun, spec: ModelSpec, chosen: _Trained,
                  metrics: dict[str, float]) -> int:
        state = chosen.model.native_state()
        files = {}
        details = common_pb2.ModelVersion()
        for name, values in self._spec.vocabularies(spec).items():
            details.vocabularies[name].values[:] = values
        if state is not None:
            files = {f"{NATIVE_FOLDER}/{name}": content for name, content in state.files.items()}
            details.native_format = state.format
        version = self._registry.register(
            spec.name, chosen.artifact, task=TASKS[spec.task], entity_type=spec.entity_type,
            feature_names=list(spec.features),
            output_names=_output_names(chosen.artifact),
            metrics=metrics, lineage=run.lineage(), files=files, details=details,
        )
        return version.version

    def _check(self, window: Window, spec: ModelSpec) -> None:
        total = len(window.y_train) + len(window.y_holdout)
        if total < spec.training.min_examples:
            raise FailedPrecondition(f"{total} labeled examples of {spec.name}; a run needs "
                                     f"min_examples={spec.training.min_examples}")
        if spec.task.is_classification and len(np.unique(window.y_train)) < 2:
            raise FailedPrecondition("the training window holds a single class")

    def _champion(self, spec: ModelSpec, trainer: Trainer) -> _Champion | None:
        try:
            current = self._registry.resolve(spec.name, CHAMPION)
        except NotFound:
            return None
        try:
            scorer = open_version(self._registry, current, list(spec.features), self._threads,
                                  spec.task.is_classification)
        except ValueError as error:
            raise FailedPrecondition(f"champion {error}") from None
        native, why = None, ""
        if not current.native_format:
            why = f"champion v{current.version} has no native state (ONNX only)"
        elif current.lineage.trainer != trainer.name or current.native_format != trainer.native_format:
            why = (f"champion v{current.version} was trained by "
                   f"{current.lineage.trainer or 'another trainer'}, not {trainer.name}")
        elif list(current.feature_names) != list(spec.features):
            why = f"champion v{current.version} reads other features than the spec's"
        else:
            files = self._registry.read_folder(spec.name, current.version, NATIVE_FOLDER)
            native = NativeState(current.native_format, files)
        return _Champion(current.version, current, scorer, native, why)


def _safe_metric(name: str, y: np.ndarray, scores) -> float:
    if name in ("log_loss", "roc_auc") and scores.probabilities is None:
        return float("nan")
    return metric(name, y, scores.predicted, scores.probabilities)


def _output_names(artifact: bytes) -> list[str]:
    import onnx

    return [o.name for o in onnx.load_model_from_string(artifact).graph.output]
