"""Two feature store replicas of one mesh split the events topic's partitions between their
materializers (Redis is shared), yet each indexes every vector: SearchSimilar answers the
same whichever replica serves it, for events produced straight onto the topic."""

from __future__ import annotations

import random
import time
from pathlib import Path

from flywheel.bench.workload import random_event
from flywheel.common.grpc.client import aio_channel, wait_for_serving_async
from flywheel.common.kafka.producer import Producer
from flywheel.common.kafka.topics import Topics
from flywheel.features.app import FeaturesApp
from flywheel.features.settings import FeaturesSettings
from flywheel.v1 import features_pb2, features_pb2_grpc

COUNT = 600
K = 10


async def test_two_replicas_answer_search_similar_identically(common, customer, tmp_path: Path,
                                                              poll) -> None:
    replicas = []
    try:
        for i in range(2):
            app = FeaturesApp(common, FeaturesSettings(
                grpc_port=0, metrics_port=0, snapshot_dir=tmp_path / f"snapshots-{i}"))
            await app.start()
            replicas.append(app)
        for app in replicas:
            await wait_for_serving_async(app.target, 60.0)
        # Both materializers hold partitions before the events arrive (the second one's
        # first assignment ends the rebalance it started).
        async def assigned() -> bool:
            return all(app.consumer.assigned.is_set() for app in replicas)

        await poll(assigned, 30, "both replicas to own partitions")

        rng = random.Random(11)
        now_ms = int(time.time() * 1000)
        events = [random_event(customer, f"s{i}", now_ms - rng.randrange(60_000), rng,
                               event_id=f"s{i}", with_vector=True) for i in range(COUNT)]
        producer = Producer(common.kafka_bootstrap, client_id="replicas-test")
        try:
            for event in events:
                producer.produce(Topics(common.namespace).events, event.entity_id, event)
            assert producer.flush(30) == 0
        finally:
            producer.close(5.0)

        async def indexed() -> bool:
            return all(len(app.store.indexes["customer"]) == COUNT for app in replicas)

        await poll(indexed, 60, f"{COUNT} vectors in both indexes")
        answers = []
        for app in replicas:
            async with aio_channel(app.target) as channel:
                stub = features_pb2_grpc.FeatureStoreServiceStub(channel)
                found = []
                for row in range(0, COUNT, 29):
                    reply = await stub.SearchSimilar(features_pb2.SearchSimilarRequest(
                        entity_type="customer", entity_id=f"s{row}", k=K), timeout=10)
                    found.append([(n.entity_id, round(n.distance, 5)) for n in reply.neighbors])
                answers.append(found)
        assert answers[0] == answers[1]
        assert all(len(neighbors) == K for neighbors in answers[0])
        # Each materializer wrote only part of the rows: the partitions were split.
        processed = [app.consumer.processed for app in replicas]
        assert sum(processed) == COUNT and min(processed) > 0, processed
    finally:
        for app in replicas:
            await app.stop()
