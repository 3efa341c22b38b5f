"""Composition root of the feedback service: Redis, Kafka clients, the join, the gRPC server."""

from __future__ import annotations

import asyncio
import logging

import redis
import redis.asyncio as aioredis

from flywheel.common.dependency import Dependency, redis_dependency, redis_for_callers
from flywheel.common.grpc.readiness import Readiness
from flywheel.common.grpc.server import GrpcServer
from flywheel.common.kafka.admin import ensure_topics
from flywheel.common.kafka.producer import Producer
from flywheel.common.kafka.topics import Topics
from flywheel.common.metrics import start_metrics_server
from flywheel.common.settings import CommonSettings
from flywheel.common.spec import load_spec
from flywheel.feedback.join import JoinPolicy
from flywheel.feedback.join_store import JoinLookup, JoinStore
from flywheel.feedback.joiner import Joiner
from flywheel.feedback.recorder import FeedbackRecorder
from flywheel.feedback.servicer import FeedbackServicer
from flywheel.feedback.settings import FeedbackSettings
from flywheel.v1 import feedback_pb2, feedback_pb2_grpc

log = logging.getLogger("flywheel.feedback")

SERVICE_NAME = feedback_pb2.DESCRIPTOR.services_by_name["FeedbackService"].full_name


class FeedbackApp:
    def __init__(self, common: CommonSettings, settings: FeedbackSettings) -> None:
        self.common = common
        self.settings = settings
        self.spec = load_spec(common.spec_path)
        self.topics = Topics(common.namespace)
        self.port = 0
        self.metrics_port = 0
        self._redis_sync: redis.Redis | None = None
        self._redis: aioredis.Redis | None = None
        self._producer: Producer | None = None
        self.joiner: Joiner | None = None
        self.server: GrpcServer | None = None

    async def start(self) -> None:
        common, settings = self.common, self.settings
        await asyncio.to_thread(ensure_topics, common.kafka_bootstrap, self.topics.all(),
                                common.kafka_timeout_s * 3)
        timeout = common.redis_timeout_s
        self._redis = redis_for_callers(common.redis_url, timeout)
        self._redis_sync = redis.Redis.from_url(common.redis_url, socket_timeout=timeout * 5,
                                                socket_connect_timeout=timeout)
        self._producer = Producer(common.kafka_bootstrap, client_id="feedback",
                                  delivery_timeout_s=common.kafka_timeout_s * 3)
        group = common.group_id("flywheel.feedback.join")
        self.joiner = Joiner(
            store=JoinStore(self._redis_sync, common.redis_key_prefix,
                            self.spec.feedback.join_ttl_seconds),
            topics=self.topics,
            policy=JoinPolicy(self.spec.feedback.allowed_lateness_seconds,
                              settings.allow_model_labels),
            bootstrap=common.kafka_bootstrap,
            group_id=group,
            transactional_id=f"{group}.{settings.instance_id}",
            instance_id=settings.instance_id,
            max_batch=settings.join_max_batch,
            kafka_timeout_s=common.kafka_timeout_s * 3,
        )
        recorder = FeedbackRecorder(
            spec=self.spec, producer=self._producer, topics=self.topics,
            lookup=JoinLookup(self._redis, common.redis_key_prefix,
                              redis_dependency(common.redis_url, timeout)),
            kafka=Dependency(f"Kafka at {common.kafka_bootstrap}", common.kafka_timeout_s * 3),
            allow_model_labels=settings.allow_model_labels,
            max_future_s=settings.max_future_seconds,
        )
        readiness = Readiness([SERVICE_NAME])
        readiness.add_check("redis", self._redis.ping)
        readiness.add_check("join_consumer", lambda: self.joiner.healthy)
        self.server = GrpcServer(settings, readiness, common.grpc_security)
        self.server.add_service(
            feedback_pb2_grpc.add_FeedbackServiceServicer_to_server,
            FeedbackServicer(recorder, settings.max_batch_size, settings.stream_chunk),
            SERVICE_NAME,
        )
        self.joiner.start()
        self.metrics_port = start_metrics_server(settings.grpc_host, settings.metrics_port)
        self.port = await self.server.start()
        log.info("feedback service started", extra={"port": self.port})

    async def stop(self) -> None:
        if self.server:
            await self.server.stop()
        if self.joiner:
            await asyncio.to_thread(self.joiner.stop)
        if self._producer:
            await asyncio.to_thread(self._producer.close, 5.0)
        if self._redis:
            await self._redis.aclose()
        if self._redis_sync:
            self._redis_sync.close()
