"""A labeled history streamed through the running mesh, exactly as production would.

Three actors share one event loop. A producer sends the rows in file order at the asked rate
through ``IngestStream``; an application calls ``Predict`` for each row once the feature store
holds it (for an entity seen before in the run, once the store holds this row's event); the
world sends the row's label back through ``RecordFeedbackBatch`` after the label delay, or
never (the label loss). The prediction is made before the label exists for the mesh: the
figures are prequential (test, then train). A row is held back while an earlier row of the
same entity waits for its prediction, so every prediction reads its own row.

The starting champion, loaded from the registry at the start, scores the same rows offline
(``flywheel.replay.static``): what the model would have done without the flywheel.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from flywheel.common.spec import Dtype
from flywheel.demo.announcements import REFUSAL_GRACE_S, REFUSED, ROLLED_BACK, LiveAnnouncements
from flywheel.demo.audit import read_rollbacks
from flywheel.demo.clients import MeshClients, MeshEndpoints, describe_rpc_error
from flywheel.demo.labels import LabelQueue
from flywheel.demo.liveness import MeshUnavailable, MeshWatcher, check_mesh, until_mesh_gone
from flywheel.demo.outcomes import training_outcomes
from flywheel.demo.pipeline import run_stages
from flywheel.demo.progress import ProgressLine
from flywheel.demo.scenario import Pacer
from flywheel.replay import prequential
from flywheel.replay.history import History
from flywheel.replay.plot import replay_plot
from flywheel.replay.static import StaticModel, StaticModelError
from flywheel.v1 import common_pb2, events_pb2, ingest_pb2, prediction_pb2

log = logging.getLogger("flywheel.replay")

TICK_S = 0.05
STREAM_S = 2.0  # one IngestStream call carries this many seconds of rows
RETRY_S = 0.2  # a row not in the store yet is asked for again after this
MATERIALIZE_TIMEOUT_S = 20.0  # ...until this long after it was sent
MAX_PREDICT_IDS = 512
READY_TIMEOUT_S = 90.0


class ReplayError(MeshUnavailable):
    """The replay cannot start against this mesh (the message says why)."""


@dataclass(frozen=True)
class ReplayConfig:
    model: str
    rate: float = 200.0  # rows per second
    label_delay_s: float = 1.0
    label_loss: float = 0.0  # share of labels never returned
    window: int = 1000  # rows per reported window, and the width of the recovery window
    recovery_tolerance: float = 0.05
    seed: int = 7  # which labels are lost
    seed_rows: int = 0  # rows that train the starting champion instead of being streamed

    def __post_init__(self) -> None:
        if self.rate <= 0:
            raise ValueError("--rate must be positive")
        if self.label_delay_s < 0:
            raise ValueError("--label-delay must be zero or more seconds")
        if not 0 <= self.label_loss < 1:
            raise ValueError("--label-loss must be in [0, 1)")
        if self.window <= 0:
            raise ValueError("--window must be a positive number of rows")
        if not 0 <= self.recovery_tolerance < 1:
            raise ValueError("--recovery-tolerance must be in [0, 1)")
        if self.seed_rows < 0:
            raise ValueError("--seed-rows must be zero or more")


@dataclass(frozen=True)
class Target:
    """What the mesh's spec says of the model: its entity, inputs, task and trainer."""

    model: str
    entity_type: str
    features: tuple[str, ...]
    dtypes: dict[str, Dtype]  # every feature of the entity
    classification: bool
    trainer: str
    mode: str

    @classmethod
    def from_spec(cls, spec, model: str) -> Target:
        declared = spec.model(model)
        entity = spec.entity(declared.entity_type)
        return cls(model, declared.entity_type, tuple(declared.features),
                   {f.name: f.dtype for f in entity.features},
                   declared.task.is_classification, declared.trainer,
                   declared.training.mode.value)


@dataclass
class _Waiting:
    row: int
    entity_id: str
    sent_at: float
    next_try: float
    repeat: bool  # the entity had an earlier row in this run: check the store's event time


@dataclass
class _Tally:
    lost: dict[int, str] = field(default_factory=dict)
    lost_samples: list[str] = field(default_factory=list)
    labels_sent: int = 0
    labels_refused: int = 0
    labels_withheld: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)


class ReplayRun:
    def __init__(self, config: ReplayConfig, target: Target, history: History,
                 endpoints: MeshEndpoints, out_dir: Path, source: str,
                 progress: ProgressLine | None = None) -> None:
        self.config = config
        self.target = target
        self.seed_part = history if config.seed_rows else None
        self.history = history.tail(config.seed_rows) if config.seed_rows else history
        self.endpoints = endpoints
        self.out_dir = out_dir
        self.source = source
        self.progress = progress or ProgressLine()
        self.tally = _Tally()
        rows = len(self.history)
        self._predicted = np.full(rows, np.nan)
        self._versions = np.zeros(rows, dtype=np.int64)
        self._withheld = np.random.default_rng(config.seed).random(rows) < config.label_loss
        self._sent_ms: dict[int, int] = {}
        self._tag = secrets.token_hex(3)
        self._waiting: list[_Waiting] = []
        self._in_flight: dict[str, int] = {}  # mesh entity id -> row waiting for its prediction
        self._seen: set[str] = set()
        self._labels = LabelQueue()
        self._next_row = 0
        self.producing = True
        self.predicting = True
        self._version = 0
        self._start = 0.0
        self._started_ms = 0
        self._live: LiveAnnouncements | None = None
        self._marks: dict[str, list[tuple[int, int]]] = {REFUSED: [], ROLLED_BACK: []}

    def _elapsed(self) -> float:
        return time.monotonic() - self._start

    # -- the run -------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        """The report; ``MeshUnavailable`` (``MeshGone`` mid-run) when the mesh is not there."""
        await asyncio.to_thread(check_mesh, self.endpoints.grpc, self.endpoints.security)
        try:
            return await until_mesh_gone(self._run(), MeshWatcher(self.endpoints.grpc,
                                                            security=self.endpoints.security))
        finally:
            if self._live is not None:
                self._live.stop()
            self.progress.close()

    async def _run(self) -> dict[str, Any]:
        async with MeshClients(self.endpoints) as clients:
            if self.seed_part is not None:
                await self._seed_champion(clients)
            static = await self._starting_champion(clients)
            static_predicted = await asyncio.to_thread(
                static.score, self.history.features, len(self.history))
            started_ms = self._started_ms = int(time.time() * 1000)
            self._start = time.monotonic()
            self._version = static.version
            self._live = LiveAnnouncements(self.endpoints.kafka_bootstrap, self.endpoints.namespace,
                                           self.target.model, started_ms).start()
            await run_stages(self, lambda: self._produce(clients), lambda: self._apply(clients),
                             lambda: self._feed_back(clients), self._show_progress,
                             self.progress.close)
            seconds = self._elapsed()
            served = {int(v) for v in self._versions if v}
            try:
                versions = await training_outcomes(clients, self.target.model, started_ms,
                                                   static.version, served)
                versions["rollbacks"] = [
                    {"seconds": round((r["at_ms"] - started_ms) / 1000, 2), "from": r["from"],
                     "to": r["to"], "reason": r["reason"]}
                    for r in await asyncio.to_thread(
                        read_rollbacks, self.endpoints.kafka_bootstrap,
                        self.endpoints.namespace, self.target.model, started_ms)]
            except grpc.aio.AioRpcError as exc:
                raise MeshUnavailable(
                    f"reading the training outcomes failed: {describe_rpc_error(exc)}") from None
        return self._report(static, static_predicted, versions, seconds)

    async def _seed_champion(self, clients: MeshClients) -> None:
        """The first ``seed_rows`` rows train a linear model, registered and promoted as the
        starting champion (bring your own model, as the demo's cold start)."""
        from flywheel.demo.register import RegistrationError, register_onnx
        from flywheel.demo.seed import train_seed_model

        target, part, rows = self.target, self.seed_part, self.config.seed_rows
        strings = [f for f in target.features if target.dtypes[f] is Dtype.STRING]
        if strings:
            raise ReplayError(f"--seed-rows trains on numeric features only; {target.model} reads "
                              f"{', '.join(strings)}: register a starting champion yourself")
        usable = [r for r in range(min(rows, len(part))) if part.refusals[r] is None]
        if len(usable) < 20:
            raise ReplayError(f"--seed-rows {rows}: only {len(usable)} usable rows to train on")
        matrix = np.array([[float(part.features[f][r]) for f in target.features] for r in usable])
        labels = part.labels[usable] if not target.classification else part.labels[usable].astype(int)
        self.progress.note(f"seed: training a linear model on the first {rows} rows")
        artifact, _ = await asyncio.to_thread(
            train_seed_model, matrix, labels, self.config.seed, not target.classification)
        path = self.out_dir / "seed-model.onnx"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(artifact)
        task = "binary_classification" if target.classification else "regression"
        if target.classification and len(set(labels.tolist())) > 2:
            task = "multiclass_classification"
        try:
            version = await asyncio.to_thread(register_onnx, self.endpoints, path, target.model,
                                              target.entity_type, target.features, task)
            await clients.promote(target.model, version, "replay: seed model")
        except RegistrationError as exc:
            raise ReplayError(str(exc)) from None
        except grpc.aio.AioRpcError as exc:
            raise ReplayError(f"promoting seed version {version}: {describe_rpc_error(exc)}") from None

    async def _starting_champion(self, clients: MeshClients) -> StaticModel:
        from flywheel.common.errors import FlywheelError

        try:
            static = await asyncio.to_thread(StaticModel.champion, self.endpoints.registry_uri,
                                             self.target.model)
        except FlywheelError as exc:
            raise ReplayError(f"{exc.message} in the registry {self.endpoints.registry_uri}: "
                              "register one (`flywheel models register --promote`) or pass "
                              "--seed-rows") from None
        except StaticModelError as exc:
            raise ReplayError(str(exc)) from None
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not await clients.model_ready(self.target.model, static.version):
            if time.monotonic() > deadline:
                raise ReplayError(f"inference did not load {self.target.model} v{static.version} "
                                  f"within {READY_TIMEOUT_S:.0f}s")
            await asyncio.sleep(0.25)
        self.progress.note(f"starting champion {self.target.model} v{static.version}; "
                           f"replaying {len(self.history)} rows at {self.config.rate:g} rows/s")
        return static

    # -- the producer ----------------------------------------------------------------------

    async def _produce(self, clients: MeshClients) -> None:
        pacer = Pacer(self.config.rate)
        owed = 0
        rows = len(self.history)
        while self._next_row < rows:
            stream_end = self._elapsed() + STREAM_S
            sent: list[int] = []

            # Bound as defaults: the generator is drained before the loop moves on.
            async def batches(stream_end=stream_end, sent=sent):
                nonlocal owed
                while self._elapsed() < stream_end and self._next_row < rows:
                    owed += pacer.due(self._elapsed())
                    events = []
                    while owed > 0 and self._next_row < rows:
                        event = self._take(self._next_row)
                        if event is False:
                            break  # an earlier row of the entity waits for its prediction
                        if event is not None:
                            events.append(event)
                            sent.append(self._next_row)
                        self._next_row += 1
                        owed -= 1
                    if events:
                        yield ingest_pb2.IngestStreamRequest(events=events)
                    await asyncio.sleep(TICK_S)

            try:
                response = await clients.ingest_stream(batches(), deadline_s=STREAM_S + 15.0)
            except grpc.aio.AioRpcError as exc:
                self.tally.errors["ingest"] += 1
                for row in sent:  # accepted or not is unknown: not scored, counted as lost
                    self._lose(row, f"ingest failed: {exc.code().name}")
                continue
            for rejection in response.rejections:
                if 0 <= rejection.index < len(sent):
                    self._lose(sent[rejection.index], f"refused by ingest: {rejection.field}",
                               rejection.reason)

    def _take(self, row: int) -> events_pb2.Event | bool | None:
        """The event of ``row`` (registered as waiting for its prediction); None when the
        row cannot be sent (lost); False when it must wait for an earlier row."""
        history = self.history
        if history.refusals[row] is not None:
            self._lose(row, history.refusals[row])
            return None
        entity_id = f"r{self._tag}-{history.entity_ids[row]}"
        if entity_id in self._in_flight:
            return False
        event_ms = history.event_ms[row] if history.event_ms is not None else None
        if event_ms is None:
            event_ms = int(time.time() * 1000)
        self._sent_ms[row] = event_ms
        stamp = Timestamp()
        stamp.FromMilliseconds(event_ms)
        values = {}
        for name, column in history.features.items():
            value = column[row]
            if value is not None:
                values[name] = _feature_value(self.target.dtypes[name], value)
        repeat = entity_id in self._seen
        self._seen.add(entity_id)
        self._in_flight[entity_id] = row
        now = self._elapsed()
        self._waiting.append(_Waiting(row, entity_id, now, now + RETRY_S, repeat))
        return events_pb2.Event(event_id=f"{entity_id}-{row}", entity_type=self.target.entity_type,
                                entity_id=entity_id, event_time=stamp, features=values)

    def _lose(self, row: int, reason: str, detail: str = "") -> None:
        if row in self.tally.lost or not np.isnan(self._predicted[row]):
            return
        self.tally.lost[row] = reason
        if len(self.tally.lost_samples) < 10:
            self.tally.lost_samples.append(f"row {row + self.config.seed_rows}: {reason}"
                                           + (f" ({detail})" if detail else ""))
        self._waiting = [w for w in self._waiting if w.row != row]
        for entity, waiting_row in list(self._in_flight.items()):
            if waiting_row == row:
                del self._in_flight[entity]

    # -- the application -------------------------------------------------------------------

    async def _apply(self, clients: MeshClients) -> None:
        """A prediction for every row as soon as the store holds it."""
        while self.producing or self._waiting:
            now = self._elapsed()
            due = [w for w in self._waiting if w.next_try <= now]
            if due:
                due = due[:MAX_PREDICT_IDS]
                chosen = {id(w) for w in due}
                self._waiting = [w for w in self._waiting if id(w) not in chosen]
                fresh = await self._fresh(clients, due)
                if fresh:
                    await self._predict(clients, fresh)
            await asyncio.sleep(TICK_S)

    async def _fresh(self, clients: MeshClients, due: list[_Waiting]) -> list[_Waiting]:
        """``due`` less the repeated entities whose stored event is older than their row's
        (asked for again later)."""
        repeats = [w for w in due if w.repeat]
        if not repeats:
            return due
        try:
            response = await clients.online_features(
                self.target.entity_type, [w.entity_id for w in repeats], self.target.features[:1])
        except grpc.aio.AioRpcError as exc:
            self._error("features", f"GetOnlineFeatures failed: {describe_rpc_error(exc)}")
            self._retry(repeats, 0.5)
            return [w for w in due if not w.repeat]
        stored = {e.entity_id: e.event_time.ToMilliseconds() for e in response.entities}
        stale = [w for w in repeats if stored.get(w.entity_id, -1) < self._sent_ms[w.row]]
        self._expire_or_retry(stale, "the feature store kept an older event")
        stale_ids = {id(w) for w in stale}
        return [w for w in due if id(w) not in stale_ids]

    async def _predict(self, clients: MeshClients, due: list[_Waiting]) -> None:
        try:
            response = await clients.predict(self.target.model, [w.entity_id for w in due])
        except grpc.aio.AioRpcError as exc:
            self._error("predict", f"Predict failed: {describe_rpc_error(exc)}")
            self._retry(due, 0.5)
            return
        if response.model_version != self._version:
            self.progress.note(f"row {self._next_row:>7}  {self.target.model} "
                               f"v{response.model_version} now serving (was v{self._version})")
            self._version = response.model_version
        by_id = {w.entity_id: w for w in due}
        for answer in response.predictions:
            waiting = by_id.pop(answer.entity_id, None)
            if waiting is None:
                continue
            if answer.status == prediction_pb2.ROW_STATUS_OK:
                self._scored(waiting, response.model_version, answer)
            else:
                reason = prediction_pb2.RowStatus.Name(answer.status)
                self._expire_or_retry([waiting], f"{reason} after {MATERIALIZE_TIMEOUT_S:.0f}s",
                                      answer.detail)
        self._retry(list(by_id.values()), RETRY_S)  # rows the answer left out: ask again

    def _scored(self, waiting: _Waiting, version: int, answer: prediction_pb2.RowPrediction) -> None:
        row = waiting.row
        self._in_flight.pop(waiting.entity_id, None)
        if self.target.classification:
            self._predicted[row] = answer.output.predicted_class
        else:
            self._predicted[row] = answer.output.predicted_value
        self._versions[row] = version
        if self._withheld[row]:
            self.tally.labels_withheld += 1
            return
        label = self.history.labels[row]
        truth = int(label) if self.target.classification else float(label)
        self._labels.put(self._elapsed() + self.config.label_delay_s, row, answer.prediction_id,
                         truth)

    def _expire_or_retry(self, waiting: list[_Waiting], reason: str, detail: str = "") -> None:
        now = self._elapsed()
        for w in waiting:
            if now - w.sent_at > MATERIALIZE_TIMEOUT_S:
                self._lose(w.row, reason, detail)
            else:
                self._retry([w], RETRY_S)

    def _retry(self, waiting: list[_Waiting], after_s: float) -> None:
        at = self._elapsed() + after_s
        for w in waiting:
            if w.row not in self.tally.lost:
                w.next_try = at
                self._waiting.append(w)

    # -- the world sending the labels back -------------------------------------------------

    async def _feed_back(self, clients: MeshClients) -> None:
        while self.predicting or len(self._labels):
            sent = await self._labels.send_due(clients, self._elapsed())
            if sent.error:
                self._error("feedback", sent.error)
            for _, name, reason in sent.refused[:3]:
                self._note(f"feedback refused {name}: {reason}")
            self.tally.labels_sent += len(sent.accepted)
            self.tally.labels_refused += len(sent.refused)
            await asyncio.sleep(TICK_S)

    def _note_announcements(self, now_ms: int | None = None) -> None:
        """Refusals and rollbacks as they are announced, marked at the row the replay had
        reached (the plot's axis is rows, not seconds)."""
        for event in self._live.drain(now_ms) if self._live is not None else []:
            self._marks[event.kind].append((self._next_row, event.version))
            self.progress.note(event.describe(self._started_ms, self.target.model))

    async def _show_progress(self) -> None:
        rows, window = len(self.history), self.config.window
        metric = prequential.Metric.for_task(self.target.classification)
        while True:
            self._note_announcements()
            done = np.flatnonzero(~np.isnan(self._predicted))
            recent = done[-window:]
            if len(recent):
                losses = metric.losses(self.history.labels[recent], self._predicted[recent])
                figure = f"{metric.name} {metric.of_losses(float(np.mean(losses))):.3f}"
            else:
                figure = f"{metric.name}   -  "
            self.progress.update(
                f"row {self._next_row:>7}/{rows}  scored {len(done):>7}  {figure} (last "
                f"{window})  {self.target.model} v{self._version}  labels "
                f"{self.tally.labels_sent:>7}  lost {len(self.tally.lost)}")
            await asyncio.sleep(0.5)

    def _error(self, kind: str, text: str) -> None:
        self.tally.errors[kind] += 1
        self._note(text)

    def _note(self, text: str) -> None:
        if len(self.tally.notes) < 10 and text not in self.tally.notes:
            self.tally.notes.append(text)
            log.warning(text)

    # -- the report ------------------------------------------------------------------------

    def _report(self, static: StaticModel, static_predicted: np.ndarray,
                versions: dict[str, Any], seconds: float) -> dict[str, Any]:
        cfg, target, tally = self.config, self.target, self.tally
        metric = prequential.Metric.for_task(target.classification)
        outcomes = prequential.Outcomes(self.history.labels, self._predicted, static_predicted,
                                        self._versions)
        figures = prequential.summary(metric, outcomes, cfg.window, self.history.drift_rows,
                                      cfg.recovery_tolerance)
        changes = prequential.version_changes(self._versions)
        self._note_announcements(int(time.time() * 1000) + int(REFUSAL_GRACE_S * 1000))
        plot = replay_plot(self.out_dir / "prequential.png", figures, changes,
                           f"flywheel replay of {Path(self.source).name} ({target.model}, "
                           f"trainer {target.trainer}, {target.mode})",
                           refusals=[m for m in self._marks[REFUSED] if m[1] in versions["refused"]],
                           rollbacks=self._marks[ROLLED_BACK])
        report = {
            "model": target.model,
            "data": self.source,
            "trainer": target.trainer,
            "mode": target.mode,
            "rows": len(self.history),
            "seed_rows": cfg.seed_rows,
            "lost": len(tally.lost),
            "lost_reasons": dict(Counter(tally.lost.values())),
            "lost_samples": tally.lost_samples,
            "prequential_accuracy": None,
            "static_prequential_accuracy": None,
            **figures,
            "starting_version": static.version,
            "final_version": self._version,
            "versions_promoted": versions["promoted"],
            "versions_refused": versions["refused"],
            "worse_promotions": versions["worse_promotions"],
            "candidates": versions["candidates"],
            "champion": versions["champion"],
            "versions_served": [v for _, v in changes],
            "version_changes": [{"row": row, "version": v} for row, v in changes],
            "rollbacks": versions["rollbacks"],
            "labels_sent": tally.labels_sent,
            "labels_withheld": tally.labels_withheld,
            "labels_refused": tally.labels_refused,
            "errors": dict(tally.errors),
            "notes": tally.notes,
            "rate": cfg.rate,
            "label_delay_s": cfg.label_delay_s,
            "label_loss": cfg.label_loss,
            "run_seconds": round(seconds, 2),
            "plot": str(plot),
        }
        return report


def _feature_value(dtype: Dtype, value: object) -> common_pb2.FeatureValue:
    if dtype is Dtype.STRING:
        return common_pb2.FeatureValue(string_value=str(value))
    if dtype is Dtype.INT64:
        return common_pb2.FeatureValue(int64_value=int(value))
    if dtype is Dtype.BOOL:
        return common_pb2.FeatureValue(bool_value=bool(value))
    return common_pb2.FeatureValue(double_value=float(value))
