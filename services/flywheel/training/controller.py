"""Decides when to train: evaluates the triggers and the live gate, queues runs, one at a
time. Manual triggers skip the debounce; automatic ones wait while a run of the same model
is queued or running."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import numpy as np

from flywheel.common.errors import NotFound, Unavailable
from flywheel.common.registry import CHAMPION, ModelRegistry
from flywheel.common.spec import FlywheelSpec, ModelSpec
from flywheel.training.dataset import CHAMPION as ROLE_CHAMPION
from flywheel.training.dataset import Dataset
from flywheel.training.live_gate import LiveGate
from flywheel.training.live_metric import error_metric_name, live_value
from flywheel.training.metrics import TRIGGERS
from flywheel.training.run_store import RunStore
from flywheel.training.runner import FAILED, QUEUED, RUNNING, SUCCEEDED, Runner, TrainingRun
from flywheel.training.triggers import Observations, fire, max_psi

log = logging.getLogger("flywheel.training.controller")


class Controller:
    def __init__(self, *, spec: FlywheelSpec, dataset: Dataset, registry: ModelRegistry,
                 runner: Runner, live_gate: LiveGate,
                 clock: Callable[[], float] = time.monotonic,
                 store: RunStore | None = None) -> None:
        self._spec = spec
        self._dataset = dataset
        self._registry = registry
        self._runner = runner
        self.live_gate = live_gate
        self._clock = clock
        # Every known run, oldest first; with a store, past ones too (see restore()).
        self.runs: dict[str, TrainingRun] = {}
        self._store = store
        self._queue: asyncio.Queue[TrainingRun] = asyncio.Queue()
        self._last_start: dict[str, float] = {}
        self._labels_at_last_run = {m.name: dataset.total(m.name) for m in spec.models}
        self._psi_reference: dict[str, tuple[int, np.ndarray]] = {}
        self.decisions: list[str] = []

    # -- runs --------------------------------------------------------------------------------

    def restore(self) -> int:
        """Loads the runs of earlier lifetimes from the store (blocking: call it from a
        worker thread, before work() starts); returns how many."""
        if self._store is not None:
            self.runs = {run.run_id: run for run in self._store.load()} | self.runs
        return len(self.runs)

    def trigger(self, model_name: str, reason: str) -> TrainingRun:
        self._spec.model(model_name)  # NOT_FOUND for a model the spec does not declare
        run = TrainingRun(model_name, reason or "manual")
        self._record_queued(run)
        self.runs[run.run_id] = run
        self._queue.put_nowait(run)
        log.info("training run %s queued: %s", run.run_id, run.trigger_reason)
        return run

    def get(self, run_id: str) -> TrainingRun:
        run = self.runs.get(run_id)
        if run is None:
            raise NotFound(f"no training run {run_id!r}", field="run_id")
        return run

    def recent(self, model_name: str = "", limit: int = 0) -> list[TrainingRun]:
        """Runs, most recent first; of one model when named; at most `limit` (0: all)."""
        runs = [r for r in reversed(self.runs.values())
                if not model_name or r.model_name == model_name]
        return runs[:limit] if limit else runs

    def _record_queued(self, run: TrainingRun) -> None:
        if self._store is None:
            return
        try:
            dropped = self._store.save(run)
        except OSError as error:
            raise Unavailable(f"the training run store ({self._store.folder}) cannot be "
                              f"written: {error.strerror or error}") from None
        for run_id in dropped:  # retention: the oldest finished runs go
            self.runs.pop(run_id, None)

    def busy(self, model_name: str) -> bool:
        return any(r.model_name == model_name and r.state in (QUEUED, RUNNING)
                   for r in self.runs.values())

    async def work(self) -> None:
        """Runs queued runs one at a time, each in a worker thread."""
        while True:
            run = await self._queue.get()
            self._last_start[run.model_name] = self._clock()
            self._labels_at_last_run[run.model_name] = self._dataset.total(run.model_name)
            await asyncio.to_thread(self._runner.run, run)
            if run.state not in (SUCCEEDED, FAILED):
                run.state = FAILED
            if self._store is not None:
                await asyncio.to_thread(self._store.checkpoint, run)

    # -- automatic decisions -----------------------------------------------------------------

    def observations(self, model: ModelSpec) -> Observations:
        name = model.name
        last = self._last_start.get(name)
        obs = {"new_labels": self._dataset.total(name) - self._labels_at_last_run.get(name, 0),
               "seconds_since_last_run": None if last is None else self._clock() - last}
        try:
            champion = self._registry.resolve(name, CHAMPION)
        except NotFound:
            return Observations(**obs)
        window = model.triggers.window
        metric_name = "accuracy" if model.task.is_classification else error_metric_name(model)
        served = self._dataset.served(name, champion.version, ROLE_CHAMPION, window)
        # Its metric at training time; a version registered without one (brought from
        # elsewhere) is measured against its own first window of joined labels.
        trained = champion.metrics.get(metric_name)
        if trained is None:
            first = self._dataset.first_served(name, champion.version, ROLE_CHAMPION, window)
            if len(first) >= window:
                trained = live_value(metric_name, first.y, first.predicted)
        if len(served) >= window:
            value = live_value(metric_name, served.y, served.predicted)
            if model.task.is_classification:
                obs["champion_accuracy"] = value
            else:
                obs["champion_error"], obs["error_name"] = value, metric_name
        if model.task.is_classification:
            obs["champion_training_accuracy"] = trained
        else:
            obs["champion_training_error"] = trained
        if model.triggers.psi_above:
            reference = self._reference(model, champion)
            current = self._dataset.recent_features(name, window)
            if len(reference) and len(current) >= window:
                obs["max_psi"], obs["psi_feature"] = max_psi(reference, current,
                                                             list(model.features))
        return Observations(**obs)

    def _reference(self, model: ModelSpec, champion) -> np.ndarray:
        """The data the champion learned from (its lineage); for a version brought from
        elsewhere, the rows of its first window as champion: the data it was promoted on."""
        cached = self._psi_reference.get(model.name)
        if cached and cached[0] == champion.version:
            return cached[1]
        ranges = [(r.topic, r.partition, r.start_offset, r.end_offset)
                  for r in champion.lineage.training_data]
        if ranges:
            reference = self._dataset.features_in(model.name, ranges)
        else:
            first = self._dataset.first_served(model.name, champion.version, ROLE_CHAMPION,
                                               model.triggers.window)
            if len(first) < model.triggers.window:
                return first.X[:0]  # not yet known: no cache, asked again next time
            reference = first.X
        self._psi_reference[model.name] = (champion.version, reference)
        return reference

    def decide_once(self) -> list[tuple[str, str]]:
        """One pass over every model: the live gate acts, the triggers say which models to
        train and why (blocking work: call it from a worker thread)."""
        wanted = []
        for model in self._spec.models:
            decision = self.live_gate.check(model)
            if decision:
                self.decisions.append(decision)
                log.info("%s: %s", model.name, decision)
            if self.busy(model.name):
                continue
            reason = fire(model.triggers, self.observations(model))
            if reason:
                TRIGGERS.labels(model.name, reason.partition(":")[0].split()[0]).inc()
                wanted.append((model.name, reason))
        return wanted

    async def watch(self, interval_s: float) -> None:
        while True:
            try:
                for model_name, reason in await asyncio.to_thread(self.decide_once):
                    if not self.busy(model_name):
                        self.trigger(model_name, reason)
            except Exception:
                log.exception("trigger / live gate check failed")
            await asyncio.sleep(interval_s)
