"""The drift demo against a running mesh, through its public gRPC APIs only.

Four actors share one event loop: an event producer streaming customers through
``IngestStream``; an application calling ``Predict`` for each customer once it arrived; the
world sending the ground truth back through ``RecordFeedbackBatch`` after a delay (some labels
flipped, some never sent); and a progress line. Midway the hidden concept drifts. The mesh's
training service notices the accuracy drop on the joined labels, retrains, gates and promotes;
inference hot-swaps; the application only sees ``model_version`` change in its answers.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from confluent_kafka import KafkaException
from google.protobuf.timestamp_pb2 import Timestamp

from flywheel.demo import analysis
from flywheel.demo.announcements import REFUSAL_GRACE_S, REFUSED, LiveAnnouncements
from flywheel.demo.audit import chunks, read_labeled, read_rollbacks
from flywheel.demo.clients import MeshClients, MeshEndpoints, describe_rpc_error
from flywheel.demo.labels import LabelQueue
from flywheel.demo.liveness import MeshUnavailable, MeshWatcher, check_mesh, until_mesh_gone
from flywheel.demo.outcomes import training_outcomes
from flywheel.demo.pipeline import run_stages
from flywheel.demo.plot import accuracy_plot
from flywheel.demo.progress import ProgressLine
from flywheel.demo.scenario import (
    ENTITY_TYPE,
    FEATURE_NAMES,
    MODEL,
    Customer,
    Pacer,
    ScenarioConfig,
    World,
)
from flywheel.v1 import common_pb2, events_pb2, ingest_pb2, prediction_pb2

log = logging.getLogger("flywheel.demo")

TICK_S = 0.1
STREAM_S = 2.0  # one IngestStream call carries this many seconds of customers
RETRY_S = 0.2  # a customer not in the store yet is asked for again after this
MATERIALIZE_TIMEOUT_S = 20.0  # ...until this long after it was sent
MAX_PREDICT_IDS = 512
ROLLING_S = 5.0


class DemoError(MeshUnavailable):
    """The mesh is not in a state the demo can run against (named in the message)."""


@dataclass
class _Waiting:
    customer: Customer
    entity_id: str
    sent_at: float
    next_try: float


@dataclass
class _Tally:
    events_sent: int = 0
    events_accepted: int = 0
    events_rejected: int = 0
    ingest_errors: int = 0
    predictions: int = 0
    predict_errors: int = 0
    unmaterialized: list[str] = field(default_factory=list)
    labels_sent: int = 0
    labels_accepted: int = 0
    labels_rejected: int = 0
    labels_withheld: int = 0
    feedback_errors: int = 0
    rejection_samples: list[str] = field(default_factory=list)


class DemoRun:
    def __init__(
        self,
        config: ScenarioConfig,
        endpoints: MeshEndpoints,
        out_dir: Path,
        progress: ProgressLine | None = None,
        ready_timeout_s: float = 90.0,
        audit_timeout_s: float = 45.0,
    ) -> None:
        self.config = config
        self.endpoints = endpoints
        self.out_dir = out_dir
        self.progress = progress or ProgressLine()
        self.ready_timeout_s = ready_timeout_s
        self.audit_timeout_s = audit_timeout_s
        self.world = World(config)
        self.tally = _Tally()
        self.run_tag = secrets.token_hex(3)
        self._waiting: list[_Waiting] = []
        self._rejected_ids: set[str] = set()
        self._accepted_ids: list[str] = []
        self._labels = LabelQueue()
        self._feedback_accepted: list[str] = []
        self._scored: list[analysis.Scored] = []
        self._recent: deque[analysis.Scored] = deque()
        self._version = 0
        self.producing = True
        self.predicting = True
        self._start = 0.0
        self._stop_audit = threading.Event()
        self._started_ms = 0
        self._live: LiveAnnouncements | None = None

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
            self._stop_audit.set()
            if self._live is not None:
                self._live.stop()
            self.progress.close()

    async def _run(self) -> dict[str, Any]:
        async with MeshClients(self.endpoints) as clients:
            seed_version, seed_accuracy = await self._cold_start(clients)
            started_ms = self._started_ms = int(time.time() * 1000)
            self._start = time.monotonic()
            self._version = seed_version
            self._live = LiveAnnouncements(self.endpoints.kafka_bootstrap,
                                           self.endpoints.namespace, MODEL, started_ms).start()
            await run_stages(self, lambda: self._produce(clients), lambda: self._apply(clients),
                             lambda: self._feed_back(clients), self._show_progress,
                             self.progress.close)
            end = self._elapsed()
            self.progress.note("auditing: every accepted event in the store, every accepted label joined")
            try:
                lost_events = await self._audit_events(clients)
                labels = await asyncio.to_thread(
                    read_labeled, self.endpoints.kafka_bootstrap, self.endpoints.namespace,
                    self._feedback_accepted, self.audit_timeout_s, self._stop_audit.is_set,
                )
                versions = await training_outcomes(
                    clients, MODEL, started_ms, seed_version,
                    {v for _, v in analysis.version_changes(self._scored)},
                )
                versions["rollbacks"] = [
                    {"t": round((r["at_ms"] - started_ms) / 1000, 2),
                     "from": r["from"], "to": r["to"], "reason": r["reason"]}
                    for r in await asyncio.to_thread(
                        read_rollbacks, self.endpoints.kafka_bootstrap,
                        self.endpoints.namespace, MODEL, started_ms)]
            except grpc.aio.AioRpcError as exc:
                raise MeshUnavailable(f"the audit after the run failed: {describe_rpc_error(exc)}") from None
            except KafkaException as exc:
                raise MeshUnavailable(f"the audit could not read the labeled topic: {exc}") from None
        return self._report(end, seed_version, seed_accuracy, lost_events, labels, versions)

    async def _cold_start(self, clients: MeshClients) -> tuple[int, float]:
        """Seed model -> registry (bring your own model) -> champion -> loaded by inference."""
        from flywheel.demo.register import RegistrationError, register_seed

        features, labels = self.world.seed_set()
        self.progress.note(f"cold start: training the seed model on {len(labels)} labeled customers")
        try:
            version, accuracy = await asyncio.to_thread(
                register_seed, self.endpoints, features, labels, self.config.seed, self.out_dir
            )
        except RegistrationError as exc:
            raise DemoError(str(exc)) from None
        try:
            await clients.promote(MODEL, version, "demo: seed model (bring your own model)")
        except grpc.aio.AioRpcError as exc:
            raise DemoError(f"promoting seed version {version}: {exc.code().name}: {exc.details()}") from None
        deadline = time.monotonic() + self.ready_timeout_s
        while not await clients.model_ready(MODEL, version):
            if time.monotonic() > deadline:
                raise DemoError(
                    f"inference did not load {MODEL} v{version} within {self.ready_timeout_s:.0f}s "
                    f"(is the inference service at {self.endpoints.grpc['inference']} up?)"
                )
            await asyncio.sleep(0.25)
        self.progress.note(f"seed model {MODEL} v{version} serving (holdout accuracy {accuracy:.3f})")
        return version, accuracy

    async def _produce(self, clients: MeshClients) -> None:
        pacer = Pacer(self.config.rate)
        drift_noted = False
        while self._elapsed() < self.config.duration_s:
            stream_end = min(self._elapsed() + STREAM_S, self.config.duration_s)
            sent: list[str] = []

            # Bound as defaults: the generator is drained before the loop moves on.
            async def batches(stream_end=stream_end, sent=sent):
                nonlocal drift_noted
                while (now := self._elapsed()) < stream_end:
                    count = pacer.due(now)
                    if count:
                        drifted = now >= self.config.drift_at_s
                        if drifted and not drift_noted:
                            drift_noted = True
                            self.progress.note(f"t={now:6.1f}s  the hidden concept drifts")
                        yield ingest_pb2.IngestStreamRequest(events=self._events(count, int(drifted), sent))
                    await asyncio.sleep(TICK_S)

            try:
                response = await clients.ingest_stream(batches(), deadline_s=STREAM_S + 15.0)
            except grpc.aio.AioRpcError as exc:
                # Accepted or not is unknown: these ids are neither counted nor audited.
                self.tally.ingest_errors += 1
                self._rejected_ids.update(sent)
                log.warning("IngestStream failed: %s %s", exc.code().name, exc.details())
                continue
            rejected = {sent[r.index] for r in response.rejections if 0 <= r.index < len(sent)}
            for rejection in list(response.rejections)[:3]:
                self._sample(f"ingest rejected {rejection.field}: {rejection.reason}")
            self._rejected_ids.update(rejected)
            self.tally.events_rejected += len(rejected)
            self.tally.events_accepted += len(sent) - len(rejected)
            self._accepted_ids.extend(eid for eid in sent if eid not in rejected)

    def _events(self, count: int, regime: int, sent: list[str]) -> list[events_pb2.Event]:
        now = Timestamp()
        now.GetCurrentTime()
        events = []
        for customer in self.world.customers(count, regime):
            entity_id = f"c{self.run_tag}-{customer.index:07d}"
            values = {name: common_pb2.FeatureValue(double_value=float(v))
                      for name, v in zip(FEATURE_NAMES, customer.features, strict=True)}
            values["segment"] = common_pb2.FeatureValue(string_value=customer.segment)
            values["visits"] = common_pb2.FeatureValue(int64_value=customer.visits)
            events.append(events_pb2.Event(
                event_id=f"{entity_id}-0", entity_type=ENTITY_TYPE, entity_id=entity_id,
                event_time=now, features=values,
            ))
            sent.append(entity_id)
            elapsed = self._elapsed()
            self._waiting.append(_Waiting(customer, entity_id, elapsed, elapsed + RETRY_S))
        self.tally.events_sent += count
        return events

    async def _apply(self, clients: MeshClients) -> None:
        """The application: a prediction for every customer as soon as the store has it."""
        while self.producing or self._waiting:
            now = self._elapsed()
            due = [w for w in self._waiting if w.next_try <= now and w.entity_id not in self._rejected_ids]
            keep = [w for w in self._waiting if w.next_try > now and w.entity_id not in self._rejected_ids]
            self._waiting = keep + due[MAX_PREDICT_IDS:]
            due = due[:MAX_PREDICT_IDS]
            if due:
                await self._predict(clients, due)
            await asyncio.sleep(TICK_S)

    async def _predict(self, clients: MeshClients, due: list[_Waiting]) -> None:
        try:
            response = await clients.predict(MODEL, [w.entity_id for w in due])
        except grpc.aio.AioRpcError as exc:
            self.tally.predict_errors += 1
            self._sample(f"Predict failed: {exc.code().name}: {exc.details()}")
            for waiting in due:
                waiting.next_try = self._elapsed() + 0.5
            self._waiting.extend(due)
            return
        now = self._elapsed()
        if response.model_version != self._version:
            self.progress.note(
                f"t={now:6.1f}s  {MODEL} v{response.model_version} now serving (was v{self._version})"
            )
            self._version = response.model_version
        by_id = {w.entity_id: w for w in due}
        for row in response.predictions:
            waiting = by_id.pop(row.entity_id, None)
            if waiting is None:
                continue
            if row.status == prediction_pb2.ROW_STATUS_OK:
                self._scored_prediction(now, response.model_version, waiting, row)
            elif now - waiting.sent_at > MATERIALIZE_TIMEOUT_S:
                self.tally.unmaterialized.append(waiting.entity_id)
            else:
                waiting.next_try = now + RETRY_S
                self._waiting.append(waiting)
        self._waiting.extend(by_id.values())  # rows the answer left out: ask again

    def _scored_prediction(self, now: float, version: int, waiting: _Waiting, row) -> None:
        customer = waiting.customer
        scored = analysis.Scored(now, version, row.output.predicted_class == customer.label)
        self._scored.append(scored)
        self._recent.append(scored)
        self.tally.predictions += 1
        if customer.label_arrives:
            due = now + customer.label_delay_s
            self._labels.put(due, customer.index, row.prediction_id, customer.label)
        else:
            self.tally.labels_withheld += 1

    async def _feed_back(self, clients: MeshClients) -> None:
        """The world: ground truth for each prediction, once its delay has passed."""
        while self.predicting or len(self._labels):
            sent = await self._labels.send_due(clients, self._elapsed())
            if sent.error:
                self.tally.feedback_errors += 1
                self._sample(sent.error)
            for _, name, reason in sent.refused[:3]:
                self._sample(f"feedback rejected {name}: {reason}")
            self.tally.labels_sent += len(sent.accepted) + len(sent.refused)
            self.tally.labels_rejected += len(sent.refused)
            self._feedback_accepted.extend(sent.accepted)
            self.tally.labels_accepted = len(self._feedback_accepted)
            await asyncio.sleep(TICK_S)

    def _note_announcements(self, now_ms: int | None = None) -> None:
        for event in self._live.drain(now_ms) if self._live is not None else []:
            self.progress.note(event.describe(self._started_ms, MODEL))

    async def _show_progress(self) -> None:
        while True:
            self._note_announcements()
            now = self._elapsed()
            while self._recent and self._recent[0].t < now - ROLLING_S:
                self._recent.popleft()
            rolling = (sum(s.correct for s in self._recent) / len(self._recent)) if self._recent else 0.0
            drift = self.config.drift_at_s - now
            phase = f"drift in {drift:4.0f}s" if drift > 0 else f"drifted {-drift:4.0f}s ago"
            t = self.tally
            self.progress.update(
                f"t={now:6.1f}s  events {t.events_sent:>6}  predictions {t.predictions:>6}  "
                f"labels {t.labels_accepted:>6}  {MODEL} v{self._version}  "
                f"accuracy {rolling:5.3f}  {phase}"
            )
            await asyncio.sleep(0.5)

    # -- after the run ---------------------------------------------------------------------

    async def _audit_events(self, clients: MeshClients) -> list[str]:
        """Accepted customers the feature store cannot return."""
        missing: list[str] = []
        for chunk in chunks(self._accepted_ids):
            response = await clients.online_features(ENTITY_TYPE, chunk, FEATURE_NAMES[:1])
            found = {e.entity_id for e in response.entities if e.status == 1}  # FEATURE_STATUS_FOUND
            missing.extend(eid for eid in chunk if eid not in found)
        return missing

    def _report(self, end: float, seed_version: int, seed_accuracy: float,
                lost_events: list[str], labels, versions: dict[str, Any]) -> dict[str, Any]:
        cfg, tally = self.config, self.tally
        scored = sorted(self._scored, key=lambda s: s.t)
        recovery = analysis.recovery(scored, cfg.drift_at_s, end, window_s=ROLLING_S)
        changes = analysis.version_changes(scored)
        promoted_after_drift = [v for t, v in changes if t >= cfg.drift_at_s]
        # Whatever registration is still waiting counts, if the outcomes call it refused.
        self._note_announcements(int(time.time() * 1000) + int(REFUSAL_GRACE_S * 1000))
        refusals = [(t, v) for t, v in self._live.timeline.times(REFUSED, self._started_ms)
                    if v in versions["refused"]] if self._live is not None else []
        title = (f"Flywheel Mesh drift demo (seed {cfg.seed}, {cfg.rate:.0f} customers/s): "
                 f"recovered in {recovery.seconds_to_recover}s" if recovery.recovered
                 else f"Flywheel Mesh drift demo (seed {cfg.seed}): not recovered")
        plot = accuracy_plot(
            self.out_dir / "accuracy.png",
            analysis.rolling(scored, ROLLING_S, 0.5, end),
            cfg.drift_at_s, changes, recovery.target, title,
            refusals=refusals, rollbacks=[(r["t"], r["to"]) for r in versions["rollbacks"]],
        )
        lost_labels = labels.missing
        lost = len(lost_events) + len(lost_labels)
        ok = (
            recovery.recovered and recovery.seconds_to_recover <= 60.0
            and lost == 0 and not versions["worse_promotions"] and bool(promoted_after_drift)
        )

        def r(value: float | None) -> float | None:
            return None if value is None else round(value, 4)

        return {
            "ok": ok,
            "accuracy_before_drift": r(recovery.accuracy_before),
            "accuracy_after_drift": r(recovery.accuracy_dip),
            "accuracy_recovered": r(recovery.accuracy_recovered),
            "target_accuracy": r(recovery.target),
            "recovered": recovery.recovered,
            "seconds_to_recover": recovery.seconds_to_recover,
            "versions_promoted": versions["promoted"],
            "versions_refused": versions["refused"],
            "worse_promotions": versions["worse_promotions"],
            "versions_served": [v for _, v in changes],
            "rollbacks": versions["rollbacks"],
            "version_changes": [{"t": round(t, 2), "version": v} for t, v in changes],
            "seed_version": seed_version,
            "seed_holdout_accuracy": round(seed_accuracy, 4),
            "final_version": self._version,
            "champion": versions["champion"],
            "candidates": versions["candidates"],
            "accuracy_by_version": {str(v): a for v, a in analysis.accuracy_by_version(scored).items()},
            "events": tally.events_accepted,
            "events_sent": tally.events_sent,
            "events_rejected": tally.events_rejected,
            "predictions": tally.predictions,
            "labels": labels.expected,
            "labels_joined": labels.found,
            "labels_withheld": tally.labels_withheld,
            "labels_rejected": tally.labels_rejected,
            "duplicated_labels": labels.duplicated,
            "lost": lost,
            "lost_events": len(lost_events),
            "lost_labels": len(lost_labels),
            "lost_samples": (lost_events + lost_labels)[:5],
            "unmaterialized": len(tally.unmaterialized),
            "errors": {"ingest": tally.ingest_errors, "predict": tally.predict_errors,
                       "feedback": tally.feedback_errors},
            "notes": tally.rejection_samples,
            "seed": cfg.seed,
            "rate": cfg.rate,
            "duration_s": cfg.duration_s,
            "drift_at_s": cfg.drift_at_s,
            "run_seconds": round(end, 2),
            "plot": str(plot),
        }

    def _sample(self, text: str) -> None:
        if len(self.tally.rejection_samples) < 10 and text not in self.tally.rejection_samples:
            self.tally.rejection_samples.append(text)
            log.warning(text)
