"""Composition root of the training service: the labeled-examples consumer, the dataset,
the registry and the announcements, the model-load reports consumer, the controller with its
run store, and the gRPC server.

Several training services may run against one mesh; exactly one is active (it holds the
controller lease, see lease.py), the others stand by: their gRPC server answers health
NOT_SERVING and every TrainingService call UNAVAILABLE naming the active holder, and they
neither consume nor train. A standby that takes the lease becomes active the way a
restarted service starts: it loads the segments and the run store from the shared data dir
(a run the old active left queued or running reads interrupted, with any version it had
registered whole), joins the consumer groups, and serves. An active that can no longer
renew the lease stops writing the registry (the runner's guard) and ends its process, so
that its supervisor restarts it as a standby.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable

import redis

from flywheel.common import tracing
from flywheel.common.announce import Announcer
from flywheel.common.errors import Unavailable
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
from flywheel.training.engines import RAY, Engine, LocalEngine
from flywheel.training.lease import KEY as LEASE_KEY
from flywheel.training.lease import Lease
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
# The exit status of a service that lost the controller lease (EX_TEMPFAIL: start again).
LEASE_LOST_EXIT = 75


def _exit_on_lost_lease() -> None:
    log.error("the training controller lease was lost: exiting so that this service "
              "starts again as a standby")
    logging.shutdown()
    os._exit(LEASE_LOST_EXIT)


class StandbyGate:
    """The TrainingService servicer as registered: every method is forwarded to the active
    servicer once there is one; until then it answers UNAVAILABLE naming the active."""

    def __init__(self, who_is_active: Callable[[], str]) -> None:
        self.target: TrainingServicer | None = None
        self._who = who_is_active

    def __getattr__(self, method: str):
        async def call(request, context):
            if self.target is None:
                holder = await asyncio.to_thread(self._who)
                raise Unavailable(
                    "this training service is a standby: the active controller is "
                    + (holder or "being elected") + "; call the active one")
            return await getattr(self.target, method)(request, context)

        return call


class TrainingApp:
    def __init__(self, common: CommonSettings, settings: TrainingSettings,
                 trainer: Trainer | None = None,
                 on_lease_lost: Callable[[], None] = _exit_on_lost_lease) -> None:
        """`trainer`: one trainer for every model instead of the spec's (tests);
        `on_lease_lost`: what happens when the lease is lost (default: end the process)."""
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
        self.engine = self._engine()
        self._redis = redis.Redis.from_url(
            common.redis_url, socket_timeout=common.redis_timeout_s,
            socket_connect_timeout=common.redis_timeout_s)
        self.lease = Lease(self._redis, common.redis_key_prefix + LEASE_KEY,
                           settings.lease_ttl_s)
        self._on_lease_lost = on_lease_lost
        self._gate = StandbyGate(self.lease.current_holder)
        self._lease_task: asyncio.Task | None = None
        self._leading = False  # holds the lease
        self.active = False  # holds it and has started everything

    def _engine(self) -> Engine:
        if self.settings.engine == RAY:
            from flywheel.training.ray_engine import RayEngine

            return RayEngine(self.settings.ray_address, self.settings.ray_workers,
                             self.settings.ray_storage, self.settings.ray_timeout_s)
        return LocalEngine(self.settings.local_max_bytes)

    def _on_labeled(self, records: list[Record]) -> None:
        with tracing.each_trace((r.headers for r in records), "store labeled examples"):
            self.dataset.append([LabeledRow(r.topic, r.partition, r.offset, r.timestamp_ms,
                                            r.value, r.headers.get("traceparent", ""))
                                 for r in records])

    async def start(self) -> None:
        """Serves health at once; becomes active now if the lease is free, else stands by
        (and takes over when it frees)."""
        common, settings = self.common, self.settings
        await asyncio.to_thread(ensure_topics, common.kafka_bootstrap, self.topics.all(),
                                common.kafka_timeout_s * 3)
        readiness = Readiness([SERVICE_NAME])
        readiness.add_check("active_controller", lambda: self.active)
        readiness.add_check("labeled_consumer",
                            lambda: self._consumer is not None and self._consumer.healthy)
        readiness.add_check("model_loads_consumer", lambda: self._loads_consumer is not None
                            and self._loads_consumer.healthy)
        self.server = GrpcServer(settings, readiness, common.grpc_security)
        self.server.add_service(training_pb2_grpc.add_TrainingServiceServicer_to_server,
                                self._gate, SERVICE_NAME)
        self._leading = await asyncio.to_thread(self.lease.try_acquire)
        self._lease_task = asyncio.create_task(self._keep_lease(), name="training-lease")
        if self._leading:
            await self._activate()
        else:
            log.info("standing by: the active training controller is %s",
                     await asyncio.to_thread(self.lease.current_holder))
        start_metrics_server(settings.grpc_host, settings.metrics_port)
        self.port = await self.server.start()
        log.info("training service started", extra={"port": self.port, "active": self.active})

    async def _keep_lease(self) -> None:
        """Renews the lease while leading; asks for it while standing by. Activation runs
        beside it, so that loading a large data dir does not let the lease expire."""
        lease = self.lease
        while True:
            await asyncio.sleep(lease.interval_s)
            try:
                held = await asyncio.to_thread(lease.renew if self._leading
                                               else lease.try_acquire)
            except redis.RedisError as error:
                log.warning("controller lease: Redis did not answer: %s", error)
                held = lease.held  # still ours until our own deadline passes
            if held and not self._leading:
                self._leading = True
                log.info("took over as the active training controller")
                self._tasks.append(asyncio.create_task(self._activate(),
                                                       name="training-activate"))
            elif self._leading and not held:
                self._leading = False
                self._on_lease_lost()
                return

    async def _activate(self) -> None:
        common, settings = self.common, self.settings
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
                        progress=self._checkpoint, engine=self.engine, guard=self.lease.check)
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
        self._gate.target = TrainingServicer(self.spec, self.registry, self.controller,
                                             self.promotions)
        self._consumer.start()
        self._loads_consumer.start()
        self._tasks += [
            asyncio.create_task(self._settle_announcements(settings.check_interval_s),
                                name="training-announcements"),
            asyncio.create_task(self.controller.work(), name="training-runs"),
            asyncio.create_task(self.controller.watch(settings.check_interval_s),
                                name="training-triggers"),
        ]
        self.active = True

    def _checkpoint(self, run) -> None:
        """A run's progress is recorded only while this service holds the lease: after
        that, the run is the new active's to mark interrupted."""
        if self.lease.held:
            self.run_store.checkpoint(run)

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
        if self._lease_task:
            self._lease_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lease_task
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
        if self._leading:
            # Handed over at once rather than after the TTL: a standby takes it next poll.
            self.active = self._leading = False
            with contextlib.suppress(redis.RedisError):
                await asyncio.to_thread(self.lease.release)
        await asyncio.to_thread(self._redis.close)
