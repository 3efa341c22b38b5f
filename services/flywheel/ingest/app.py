"""Composition root of the ingest service: producer, validator, servicer, gRPC server."""

from __future__ import annotations

import asyncio
import logging

from flywheel.common.errors import Unavailable
from flywheel.common.grpc.readiness import Readiness
from flywheel.common.grpc.server import GrpcServer
from flywheel.common.kafka.admin import ensure_topics
from flywheel.common.kafka.producer import Producer
from flywheel.common.kafka.topics import Topics
from flywheel.common.metrics import start_metrics_server
from flywheel.common.settings import CommonSettings
from flywheel.common.spec import FlywheelSpec, load_spec
from flywheel.common.validation import EventValidator
from flywheel.ingest.core import Ingestor
from flywheel.ingest.servicer import SERVICE, IngestServicer, add_to_server
from flywheel.ingest.settings import IngestSettings

log = logging.getLogger("flywheel.ingest")


class IngestApp:
    def __init__(
        self, common: CommonSettings, settings: IngestSettings, spec: FlywheelSpec | None = None
    ) -> None:
        self.common = common
        self.settings = settings
        self.spec = spec or load_spec(common.spec_path)
        self.topics = Topics(common.namespace)
        self.readiness = Readiness([SERVICE])
        self.server = GrpcServer(settings, self.readiness, common.grpc_security)
        self.producer: Producer | None = None
        self.port = 0
        self.metrics_port = 0
        self._kafka_ok = False
        self._watch: asyncio.Task | None = None

    @property
    def target(self) -> str:
        return f"{self.settings.grpc_host}:{self.port}"

    async def start(self) -> None:
        self.producer = Producer(
            self.common.kafka_bootstrap,
            client_id="flywheel-ingest",
            delivery_timeout_s=max(self.common.kafka_timeout_s, 1.0),
            poll_in_background=False,  # the ingestor serves the reports on its loop
        )
        ingestor = Ingestor(
            EventValidator(self.spec),
            self.producer,
            self.topics.events,
            max_in_flight_events=self.settings.max_in_flight_events,
            max_reported_rejections=self.settings.max_reported_rejections,
        )
        servicer = IngestServicer(ingestor, self.common.kafka_timeout_s, self.settings.ack_margin_s)
        self.server.add_service(add_to_server, servicer, SERVICE)
        self.readiness.add_check("kafka", lambda: self._kafka_ok)
        self._watch = asyncio.create_task(self._watch_kafka(), name="kafka-watch")
        self.metrics_port = start_metrics_server(self.settings.grpc_host, self.settings.metrics_port)
        self.port = await self.server.start()

    async def _watch_kafka(self) -> None:
        """Topics ensured once, then metadata checked every `readiness_interval_s`."""
        topics = [self.topics.events, self.topics.events.dlq]
        timeout = self.common.kafka_timeout_s
        while not self._kafka_ok:
            try:
                await asyncio.to_thread(ensure_topics, self.common.kafka_bootstrap, topics, timeout)
                self._kafka_ok = True
            except Unavailable as error:
                log.warning("Kafka not ready: %s", error)
                await asyncio.sleep(1.0)
        while True:
            await asyncio.sleep(self.settings.readiness_interval_s)
            self._kafka_ok = await asyncio.to_thread(self._metadata_answers)

    def _metadata_answers(self) -> bool:
        try:
            self.producer.raw.list_topics(self.topics.events.name, timeout=2.0)  # type: ignore[union-attr]
            return True
        except Exception:  # noqa: BLE001 - any failure means not ready
            return False

    async def stop(self) -> None:
        if self._watch:
            self._watch.cancel()
        await self.server.stop()
        if self.producer:
            await asyncio.to_thread(self.producer.close, self.common.kafka_timeout_s)
