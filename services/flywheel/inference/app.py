"""Composition root of the inference service: builds everything, owns start and stop.

Start: topics, producer, the gRPC server (health NOT_SERVING), the model-versions consumer,
then every registry model at its aliases. Health turns SERVING once a champion is loaded and
the consumer is assigned.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor

from flywheel.common.grpc.readiness import Readiness
from flywheel.common.grpc.server import GrpcServer
from flywheel.common.kafka.admin import ensure_topics
from flywheel.common.kafka.consumer import ConsumerWorker
from flywheel.common.kafka.producer import Producer
from flywheel.common.kafka.topics import Topics
from flywheel.common.metrics import start_metrics_server
from flywheel.common.registry import ModelRegistry
from flywheel.common.settings import CommonSettings
from flywheel.common.signing import Verifier
from flywheel.inference import oip_servicer, prediction_servicer
from flywheel.inference.batcher import BATCH_SIZE, Batcher
from flywheel.inference.feature_client import FeatureStoreClient
from flywheel.inference.load_reports import LoadReporter, reporting
from flywheel.inference.loader import LoadedModel, Loader, session_factory
from flywheel.inference.model_feed import ModelFeedHandler
from flywheel.inference.model_store import ModelStore
from flywheel.inference.prediction_log import PredictionLog
from flywheel.inference.predictor import Predictor
from flywheel.inference.settings import InferenceSettings
from flywheel.inference.statistics import Statistics
from flywheel.v1 import common_pb2, prediction_pb2_grpc

log = logging.getLogger("flywheel.inference")


class InferenceApp:
    def __init__(self, common: CommonSettings, settings: InferenceSettings) -> None:
        self.common = common
        self.settings = settings
        self.topics = Topics(common.namespace)
        self.registry = ModelRegistry(common.registry_uri)
        self.port = 0
        self.metrics_port = 0
        self.producer: Producer | None = None
        self.consumer: ConsumerWorker | None = None
        self.feature_store: FeatureStoreClient | None = None
        self._executor = ThreadPoolExecutor(settings.run_threads, thread_name_prefix="ort-run")
        self.loader = Loader(
            self.registry,
            session_factory(
                settings.providers, settings.intra_op_threads, settings.inter_op_threads
            ),
            max_artifact_bytes=settings.max_artifact_bytes,
            warmup_rows=settings.warmup_rows,
            signatures=(Verifier(settings.trusted_key_files, settings.require_signature)
                        if settings.trusted_key_files or settings.require_signature else None),
        )
        # Every load attempt is reported on the model-loads topic (once the producer exists).
        self.load_reporter: LoadReporter | None = None
        self.store = ModelStore(
            self.registry,
            reporting(self._load, self._report_load, f"{socket.gethostname()}:{os.getpid()}"),
            self._make_batcher,
            max_pinned=settings.max_pinned_versions,
        )
        self.statistics = Statistics()
        self.readiness: Readiness | None = None
        self.server: GrpcServer | None = None

    async def _load(self, meta: common_pb2.ModelVersion) -> LoadedModel:
        return await asyncio.wait_for(
            asyncio.to_thread(self.loader.load, meta), self.settings.load_timeout_s
        )

    async def _report_load(self, record) -> None:
        if self.load_reporter is not None:
            await self.load_reporter(record)

    def _make_batcher(self, model: LoadedModel) -> Batcher:
        by_model = BATCH_SIZE.observer(model.meta.model_name)
        by_version = self.statistics.run_observer(model.meta.model_name, model.meta.version)

        def on_batch(rows: int) -> None:
            by_model(rows)
            by_version(rows)

        return Batcher(
            model.session.run,
            self._executor,
            max_batch_size=self.settings.max_batch_size,
            max_queue_delay_us=self.settings.max_queue_delay_us,
            batchable=model.batchable,
            on_batch=on_batch,
            inline_max_run_us=self.settings.inline_max_run_us,
            # A run on the calling thread alone is timed by that thread's CPU time (see
            # batcher.py); anything else (GPU, intra-op threads) by the wall clock.
            clock=(time.thread_time
                   if model.session.providers == ("CPUExecutionProvider",)
                   and self.settings.intra_op_threads == 1
                   else time.perf_counter),
        )

    async def start(self) -> None:
        common, settings = self.common, self.settings
        # grpc.aio objects bind to the running loop: built here, not in __init__.
        self.readiness = Readiness([oip_servicer.SERVICE_NAME, prediction_servicer.SERVICE_NAME])
        self.readiness.add_check("model_loaded", lambda: self.store.ready)
        self.readiness.add_check(
            "model_versions_consumer", lambda: self.consumer is not None and self.consumer.healthy
        )
        self.server = GrpcServer(settings, self.readiness, common.grpc_security)
        await asyncio.to_thread(
            ensure_topics,
            common.kafka_bootstrap,
            [self.topics.predictions, self.topics.model_versions, self.topics.model_versions.dlq,
             self.topics.model_loads],
        )
        self.producer = Producer(
            common.kafka_bootstrap,
            client_id="inference",
            delivery_timeout_s=common.kafka_timeout_s,
            extra_config={"linger.ms": settings.log_linger_ms,
                          "compression.type": settings.log_compression},
            # The prediction log serves the delivery reports on the event loop (a poll thread
            # would take the GIL from the loop for every batch of reports); the DLQ's blocking
            # sends poll for their own.
            poll_in_background=False,
        )
        self.load_reporter = LoadReporter(self.producer, self.topics.model_loads,
                                          common.kafka_timeout_s)
        predictions = self.topics.predictions
        producer = self.producer
        prediction_log = PredictionLog(
            lambda records, headers, on_delivery: producer.produce_all(
                predictions.name, records, headers, on_delivery),
            predictions.type_name,
            wait_for_ack=settings.log_wait_for_ack,
            timeout_s=settings.log_timeout_s,
            serve_reports=producer.serve_reports,
        )
        self.feature_store = FeatureStoreClient(
            settings.feature_store_target, settings.feature_store_timeout_s,
            settings.max_message_bytes, max_ids_per_call=settings.max_predict_rows,
            max_calls_in_flight=settings.feature_store_calls_in_flight,
            security=common.grpc_security,
        )
        predictor = Predictor(
            self.store, self.feature_store.fetch, prediction_log, max_rows=settings.max_predict_rows,
            statistics=self.statistics,
        )
        self.server.add_service(
            oip_servicer.add_to_server,
            oip_servicer.OipServicer(self.store, lambda: self.readiness.ready, self.registry,
                                     self.statistics),
            oip_servicer.SERVICE_NAME,
        )
        self.server.add_service(
            prediction_pb2_grpc.add_PredictionServiceServicer_to_server,
            prediction_servicer.PredictionServicer(predictor),
            prediction_servicer.SERVICE_NAME,
        )
        self.port = await self.server.start()
        self.metrics_port = start_metrics_server(settings.grpc_host, settings.metrics_port)
        self.consumer = ConsumerWorker(
            bootstrap=common.kafka_bootstrap,
            # Every replica reads every announcement, from the start of the compacted topic,
            # as a plain reader: the group is never joined nor committed, so a replica leaves
            # no consumer group behind when it stops or is killed.
            group_id=common.group_id("flywheel.inference.model-feed"),
            follow_all=True,
            topics=[self.topics.model_versions],
            handler=ModelFeedHandler(
                self.store, asyncio.get_running_loop(), settings.load_timeout_s * 2
            ),
            dlq_producer=self.producer,
            name="inference-model-versions",
        )
        self.consumer.start()
        await self.store.load_from_registry()
        log.info(
            "inference started",
            extra={"port": self.port, "metrics_port": self.metrics_port,
                   "models": self.store.model_names()},
        )

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
        if self.consumer is not None:
            await asyncio.to_thread(self.consumer.stop)
        if self.producer is not None:
            await asyncio.to_thread(self.producer.close, self.common.kafka_timeout_s)
        if self.feature_store is not None:
            await self.feature_store.close()
        self._executor.shutdown(wait=False, cancel_futures=True)
