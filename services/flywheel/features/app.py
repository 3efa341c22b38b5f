"""Composition root of the feature store: Redis, the vector indexes, the event consumer,
the servicer and the gRPC server; owns start, snapshots and stop."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import redis
import redis.asyncio as aioredis
from confluent_kafka import Consumer, TopicPartition

from flywheel.common.dependency import redis_dependency, redis_for_callers
from flywheel.common.grpc.readiness import Readiness
from flywheel.common.grpc.server import GrpcServer
from flywheel.common.kafka.admin import ensure_topics
from flywheel.common.kafka.consumer import ConsumerWorker
from flywheel.common.kafka.producer import Producer
from flywheel.common.kafka.security import secured
from flywheel.common.kafka.topics import Topics
from flywheel.common.metrics import start_metrics_server
from flywheel.common.settings import CommonSettings
from flywheel.common.spec import FlywheelSpec, load_spec
from flywheel.common.validation import EventValidator
from flywheel.features.core import FeatureStore, Limits
from flywheel.features.framed import READ_SCRIPT, layouts_of
from flywheel.features.keys import KeySpace
from flywheel.features.materializer import IndexFollower, Materializer, dead_letter_invalid
from flywheel.features.online_store import OnlineStore
from flywheel.features.script_pipe import ScriptPipe
from flywheel.features.servicer import SERVICE, FeatureStoreServicer, add_to_server
from flywheel.features.settings import FeaturesSettings
from flywheel.features.vector_index import VectorIndex, gpu_available

log = logging.getLogger("flywheel.features")



class FeaturesApp:
    def __init__(
        self, common: CommonSettings, settings: FeaturesSettings, spec: FlywheelSpec | None = None
    ) -> None:
        self.common = common
        self.settings = settings
        self.spec = spec or load_spec(common.spec_path)
        self.topics = Topics(common.namespace)
        self.readiness = Readiness([SERVICE])
        self.server = GrpcServer(settings, self.readiness, common.grpc_security)
        self.snapshot_folder = Path(settings.snapshot_dir) / (common.namespace or "default")
        self.use_gpu = gpu_available() if settings.use_gpu is None else settings.use_gpu
        self.port = 0
        self.metrics_port = 0
        self.store: FeatureStore | None = None
        self.consumer: ConsumerWorker | None = None
        self.index_follower: ConsumerWorker | None = None
        self._dlq_producer: Producer | None = None
        self._redis: redis.Redis | None = None
        self._aioredis: aioredis.Redis | None = None
        self._tasks: list[asyncio.Task] = []

    @property
    def target(self) -> str:
        return f"{self.settings.grpc_host}:{self.port}"

    async def start(self) -> None:
        timeout = self.common.redis_timeout_s
        self._redis = redis.Redis.from_url(
            self.common.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self._aioredis = redis_for_callers(self.common.redis_url, timeout)
        online = OnlineStore(
            KeySpace(self.common.redis_key_prefix), self._redis, self._aioredis,
            layouts_of(self.spec.entities),
            ScriptPipe.from_url(self.common.redis_url, READ_SCRIPT, timeout),
            redis=redis_dependency(self.common.redis_url, timeout),
        )
        indexes = {
            entity.name: self._empty_index(entity.vector.dimension, entity.vector.ivf_min_vectors)
            for entity in self.spec.entities
            if entity.vector is not None
        }
        self.store = FeatureStore(
            EventValidator(self.spec),
            online,
            indexes,
            Limits(max_entity_ids=self.settings.max_entity_ids, max_k=self.settings.max_k),
        )
        self.server.add_service(add_to_server, FeatureStoreServicer(self.store), SERVICE)
        self.readiness.add_check("redis", online.ping)
        self.readiness.add_check("consumer", lambda: bool(self.consumer and self.consumer.healthy))
        self.metrics_port = start_metrics_server(self.settings.grpc_host, self.settings.metrics_port)
        self._tasks.append(asyncio.create_task(self._bring_up(), name="features-bring-up"))
        self.port = await self.server.start()

    def _empty_index(self, dimension: int, ivf_min_vectors: int) -> VectorIndex:
        return VectorIndex(
            dimension, ivf_min_vectors=ivf_min_vectors, nprobe=self.settings.ivf_nprobe,
            use_gpu=self.use_gpu,
        )

    def _snapshot_path(self, entity_type: str) -> Path:
        return self.snapshot_folder / f"{entity_type}.vectors"

    async def _bring_up(self) -> None:
        """Indexes first (snapshot + Redis), then topics, then the consumer; retried until
        Redis and Kafka answer. Health stays NOT_SERVING meanwhile."""
        await self._retry_until_done(
            ensure_topics, self.common.kafka_bootstrap,
            [self.topics.events, self.topics.events.dlq], self.common.kafka_timeout_s,
        )
        # Where the materializers have written Redis up to, read before the index is
        # reconciled with Redis: the index follower goes on from there, so no vector falls
        # between the two (one seen twice is harmless: newer-wins).
        committed: dict[tuple[str, int], int] = {}
        await self._retry_until_done(self._read_committed, committed)
        await self._retry_until_done(self._load_indexes)
        self.store.vectors_ready = True  # type: ignore[union-attr]
        self._dlq_producer = Producer(self.common.kafka_bootstrap, client_id="flywheel-features-dlq")
        self.consumer = ConsumerWorker(
            bootstrap=self.common.kafka_bootstrap,
            group_id=self.common.group_id("flywheel-features"),
            topics=[self.topics.events],
            handler=Materializer(self.store),  # type: ignore[arg-type]
            dlq_producer=self._dlq_producer,
            error_policy=dead_letter_invalid,
            max_batch=self.settings.consumer_max_batch,
            name="features-materializer",
        )
        self.consumer.start()
        if any(entity.vector is not None for entity in self.spec.entities):
            self.index_follower = ConsumerWorker(
                bootstrap=self.common.kafka_bootstrap,
                group_id=self.common.group_id("flywheel-features-index"),
                topics=[self.topics.events], handler=IndexFollower(self.store),
                dlq_producer=self._dlq_producer, max_batch=self.settings.consumer_max_batch,
                name="features-index-follower", follow_all=True, start_offsets=committed,
            )
            self.index_follower.start()
        self._tasks.append(asyncio.create_task(self._snapshot_loop(), name="vector-snapshots"))

    def _read_committed(self, out: dict[tuple[str, int], int]) -> None:
        """The materializer group's committed offsets of the events topic (none: from the
        beginning), without joining the group."""
        name = self.topics.events.name
        reader = Consumer(secured({"bootstrap.servers": self.common.kafka_bootstrap,
                                   "group.id": self.common.group_id("flywheel-features"),
                                   "enable.auto.commit": False}))
        try:
            timeout = self.common.kafka_timeout_s
            partitions = reader.list_topics(name, timeout=timeout).topics[name].partitions
            for tp in reader.committed([TopicPartition(name, p) for p in partitions],
                                       timeout=timeout):
                if tp.offset >= 0:
                    out[(name, tp.partition)] = tp.offset
        finally:
            reader.close()

    @staticmethod
    async def _retry_until_done(step, *args) -> None:
        while True:
            try:
                await asyncio.to_thread(step, *args)
                return
            except Exception as error:  # noqa: BLE001 - not ready yet; health says so
                log.warning("feature store not ready: %s", error)
                await asyncio.sleep(1.0)

    def _load_indexes(self) -> None:
        assert self.store is not None
        for entity in self.spec.entities:
            if entity.vector is None:
                continue
            path = self._snapshot_path(entity.name)
            index = self.store.indexes[entity.name]
            if path.exists() and len(index) == 0:
                try:
                    index = VectorIndex.from_snapshot(
                        path, dimension=entity.vector.dimension,
                        ivf_min_vectors=entity.vector.ivf_min_vectors,
                        nprobe=self.settings.ivf_nprobe, use_gpu=self.use_gpu,
                    )
                except (ValueError, OSError, RuntimeError) as error:
                    log.warning("snapshot %s unusable (%s); rebuilding from Redis", path, error)
            upserted, removed = index.reconcile(self.store.online.vectors(entity.name))
            self.store.indexes[entity.name] = index
            log.info(
                "vector index ready",
                extra={"entity_type": entity.name, "vectors": len(index),
                       "from_redis": upserted, "removed": removed},
            )

    async def _snapshot_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.snapshot_interval_s)
            try:
                await asyncio.to_thread(self.write_snapshots)
            except OSError as error:
                log.warning("vector snapshot failed: %s", error)

    def write_snapshots(self) -> None:
        if self.store is None:
            return
        for entity_type, index in self.store.indexes.items():
            index.write_snapshot(self._snapshot_path(entity_type))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.server.stop()
        for consumer in (self.consumer, self.index_follower):
            if consumer:
                await asyncio.to_thread(consumer.stop)
        try:
            await asyncio.to_thread(self.write_snapshots)
        except OSError as error:
            log.warning("vector snapshot at stop failed: %s", error)
        if self._dlq_producer:
            await asyncio.to_thread(self._dlq_producer.close, 5.0)
        if self.store is not None:
            await self.store.online.close()
        if self._aioredis is not None:
            await self._aioredis.aclose()
        if self._redis is not None:
            self._redis.close()
