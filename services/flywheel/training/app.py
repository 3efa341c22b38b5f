"""Composition root of the training service: the labeled-examples consumer, the dataset,
the registry and the announcements, the model-load reports consumer, the controller with its
run store, and the gRPC server."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from flywheel.common import tracing
from flywheel.common.announce import Announcer
from flywheel.common.grpc.readiness import Readiness
from flywheel.common.grpc.server import GrpcServer
from flywheel.common.kafka.admin import ensure_topics
from flywheel.common.kafka.consumer import ConsumerWorker
from flywheel.common.kafka.producer import Producer
from flywheel.common.kafka.records import Record
from flywheel.common.kafka.topics import Topics
from flywheel.common.metrics import start_metrics_server
from flywheel.common.registry import ModelRegistry
from flywheel.common.settings import CommonSettings
from flywheel.common.spec import load_spec
from flywheel.training.controller import Controller
from flywheel.training.dataset import Dataset, LabeledRow
from flywheel.training.live_gate import LiveGate
from flywheel.training.load_reports import LoadReportHandler
from flywheel.training.promotions import Promotions
from flywheel.training.run_store import RunStore
from flywheel.training.runner import Runner
from flywheel.training.servicer import TrainingServicer
from flywheel.training.settings import TrainingSettings
from flywheel.training.trainers import Trainer, check_trainers
from flywheel.v1 import training_pb2, training_pb2_grpc

log = logging.getLogger("flywheel.training")

SERVICE_NAME = training_pb2.DESCRIPTOR.services_by_name["TrainingService"].full_name


class TrainingApp:
    def __init__(self, common: CommonSettings, settings: TrainingSettings,
                 trainer: Trainer | None = None) -> None:
        """`trainer`: one trainer for every model instead of the spec's (tests)."""
        self.common = common
        self.settings = settings
        self.spec = load_spec(common.spec_path)
        # Every model's trainer is built now: a bad trainer or parameter stops the service
        # at start with the spec key named, not a run later.
        self.trainers = (check_trainers(self.spec) if trainer is None
                         else {m.name: trainer for m in self.spec.models})
        self.topics = Topics(common.namespace)
        self.registry = ModelRegistry(common.registry_uri, sign_key=settings.sign_key)
        self.dataset = Dataset(settings.data_dir, self.spec.models)
        self.run_store = RunStore(settings.data_dir / "runs", settings.runs_kept, self.registry)
        self.port = 0
        self._producer: Producer | None = None
        self._announcer: Announcer | None = None
        self._consumer: ConsumerWorker | None = None
        self._loads_consumer: ConsumerWorker | None = None
        self._tasks: list[asyncio.Task] = []
        self.server: GrpcServer | None = None
        self.controller: Controller | None = None
        self.promotions: Promotions | None = None

    def _on_labeled(self, records: list[Record]) -> None:
        with tracing.each_trace((r.headers for r in records), "store labeled examples"):
            self.dataset.append([LabeledRow(r.topic, r.partition, r.offset, r.timestamp_ms,
                                            r.value, r.headers.get("traceparent", ""))
                                 for r in records])

    async def start(self) -> None:
        common, settings = self.common, self.settings
        await asyncio.to_thread(ensure_topics, common.kafka_bootstrap, self.topics.all(),
                                common.kafka_timeout_s * 3)
        loaded = await asyncio.to_thread(self.dataset.load)
        log.info("loaded %d labeled examples from segments", loaded)
        removed = await asyncio.to_thread(self.registry.remove_staging_leftovers)
        if removed:
            log.warning("removed %d unfinished registrations from the registry", removed)
        self._producer = Producer(common.kafka_bootstrap, client_id="training",
                                  delivery_timeout_s=common.kafka_timeout_s * 3)
        self._announcer = Announcer(common.kafka_bootstrap, self.topics, common.kafka_timeout_s,
                                    client_id="training-announcer")
        self.promotions = Promotions(self.registry, self._announcer)
        live_gate = LiveGate(self.spec, self.dataset, self.registry, self.promotions)
        live_gate.resume()
        runner = Runner(spec=self.spec, dataset=self.dataset, registry=self.registry,
                        promotions=self.promotions, trainers=self.trainers,
                        promote_to=settings.promote_to, onnx_threads=settings.onnx_threads,
                        progress=self.run_store.checkpoint)
        self.controller = Controller(spec=self.spec, dataset=self.dataset,
                                     registry=self.registry, runner=runner, live_gate=live_gate,
                                     store=self.run_store)
        restored = await asyncio.to_thread(self.controller.restore)
        log.info("loaded %d past training runs", restored)
        self._consumer = ConsumerWorker(
            bootstrap=common.kafka_bootstrap, group_id=common.group_id("flywheel.training"),
            topics=[self.topics.labeled], handler=self._on_labeled,
            dlq_producer=self._producer, max_batch=settings.consumer_max_batch,
            poll_timeout_s=0.5, name="training-labeled",
        )
        self._loads_consumer = ConsumerWorker(
            bootstrap=common.kafka_bootstrap,
            group_id=common.group_id("flywheel.training.model-loads"),
            topics=[self.topics.model_loads], handler=LoadReportHandler(self.promotions),
            dlq_producer=self._producer, poll_timeout_s=0.5, name="training-model-loads",
        )
        readiness = Readiness([SERVICE_NAME])
        readiness.add_check("labeled_consumer", lambda: self._consumer.healthy)
        readiness.add_check("model_loads_consumer", lambda: self._loads_consumer.healthy)
        self.server = GrpcServer(settings, readiness, common.grpc_security)
        self.server.add_service(
            training_pb2_grpc.add_TrainingServiceServicer_to_server,
            TrainingServicer(self.spec, self.registry, self.controller, self.promotions),
            SERVICE_NAME,
        )
        self._consumer.start()
        self._loads_consumer.start()
        self._tasks = [
            asyncio.create_task(self._settle_announcements(settings.check_interval_s),
                                name="training-announcements"),
            asyncio.create_task(self.controller.work(), name="training-runs"),
            asyncio.create_task(self.controller.watch(settings.check_interval_s),
                                name="training-triggers"),
        ]
        start_metrics_server(settings.grpc_host, settings.metrics_port)
        self.port = await self.server.start()
        log.info("training service started", extra={"port": self.port})

    async def _settle_announcements(self, interval_s: float) -> None:
        """Re-announces the aliases of models whose last announcement was not acknowledged."""
        while True:
            await asyncio.sleep(interval_s)
            if self.promotions.unsettled:
                try:
                    await asyncio.to_thread(self.promotions.settle)
                except Exception:  # tried again at the next interval
                    log.exception("re-announcing unsettled models failed")

    async def stop(self) -> None:
        if self.server:
            await self.server.stop()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for consumer in (self._consumer, self._loads_consumer):
            if consumer:
                await asyncio.to_thread(consumer.stop)
        if self._announcer:
            await asyncio.to_thread(self._announcer.close)
        if self._producer:
            await asyncio.to_thread(self._producer.close, 5.0)
