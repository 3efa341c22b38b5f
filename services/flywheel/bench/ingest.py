"""`flywheel bench ingest`: events/s through IngestStream into Kafka, against a raw
confluent-kafka producer loop with the same payloads and acks=all, in the same run.

The ingest service runs as its own process on a fresh namespace, as deployed (`--in-process`
runs it inside the bench's event loop instead, sharing the interpreter with the client). The
client sends pre-serialized stream messages so that the figure is the server's (validation,
event ids, publishing and waiting for every acknowledgement). The baseline produces the
same serialized events, keyed the same way, with the same three headers ingest puts on every
record (message type, request id, traceparent), with the producer settings of the services,
and waits for every delivery report. Rounds alternate between the two; the best round of each is the headline.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=50_000, help="events per round")
    parser.add_argument("--batch", type=int, default=1_000, help="events per stream message")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each")
    parser.add_argument("--spec", default=None, help="spec file (default FLYWHEEL_SPEC_PATH)")
    parser.add_argument("--in-process", action="store_true",
                        help="run the ingest service inside the bench's process")


def run(args: argparse.Namespace) -> dict[str, Any]:
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    from confluent_kafka import Producer as RawProducer

    from flywheel.bench import report
    from flywheel.bench._service import ServiceProcess, bench_common
    from flywheel.bench.workload import random_event
    from flywheel.common.grpc.client import aio_channel, wait_for_serving_async
    from flywheel.common.kafka.admin import ensure_topics
    from flywheel.common.kafka.headers import standard_headers
    from flywheel.common.kafka.topics import Topics
    from flywheel.common.spec import load_spec
    from flywheel.ingest.app import IngestApp
    from flywheel.ingest.settings import IngestSettings
    from flywheel.v1 import ingest_pb2

    count = getattr(args, "events", 50_000)
    batch = getattr(args, "batch", 1_000)
    rounds = getattr(args, "rounds", 3)
    common = bench_common(args)
    in_process = getattr(args, "in_process", False)
    if in_process:
        app = IngestApp(common, IngestSettings(grpc_port=0, metrics_port=0))
    else:
        # The service creates its topics when it starts; the baseline may run first.
        ensure_topics(common.kafka_bootstrap, [Topics(common.namespace).events])
        app = ServiceProcess("ingest", common, {})
    entity = load_spec(common.spec_path).entities[0]
    rng = random.Random(1)
    now_ms = int(time.time() * 1000)
    events = [random_event(entity, f"c{i % 10_000}", now_ms - i, rng) for i in range(count)]
    messages = [
        ingest_pb2.IngestStreamRequest(events=events[i:i + batch]).SerializeToString()
        for i in range(0, count, batch)
    ]
    # The baseline sends what ingest publishes: the events with their ids filled in.
    payloads = []
    for i, event in enumerate(events):
        event.event_id = f"{i:032x}"
        payloads.append((event.entity_id.encode(), event.SerializeToString()))
    payload_bytes = sum(len(v) for _, v in payloads) / count
    events_topic = Topics(common.namespace).events
    topic = events_topic.name
    headers = standard_headers(events_topic.type_name, request_id="bench-baseline")

    if in_process:
        await app.start()
    channel = aio_channel(app.target)
    try:
        await wait_for_serving_async(app.target, 60.0)
        stream = channel.stream_unary(
            "/flywheel.v1.IngestService/IngestStream",
            request_serializer=None,
            response_deserializer=ingest_pb2.IngestStreamResponse.FromString,
        )

        async def ours() -> float:
            async def requests():
                for message in messages:
                    yield message

            started = time.perf_counter()
            reply = await stream(requests(), timeout=300)
            elapsed = time.perf_counter() - started
            if reply.accepted_count != count:
                raise RuntimeError(f"ingest accepted {reply.accepted_count} of {count}")
            return count / elapsed

        raw = RawProducer({
            "bootstrap.servers": common.kafka_bootstrap, "enable.idempotence": True,
            "acks": "all", "linger.ms": 5, "compression.type": "lz4",
        })

        def baseline() -> float:
            delivered = [0]
            failed = [0]

            def on_delivery(error, _message) -> None:
                if error is None:
                    delivered[0] += 1
                else:
                    failed[0] += 1

            started = time.perf_counter()
            for key, value in payloads:
                while True:
                    try:
                        raw.produce(topic, value=value, key=key, headers=headers,
                                    on_delivery=on_delivery)
                        break
                    except BufferError:
                        raw.poll(0.001)
                raw.poll(0)
            raw.flush(120)
            elapsed = time.perf_counter() - started
            if delivered[0] != count:
                raise RuntimeError(f"baseline delivered {delivered[0]} of {count}")
            return count / elapsed

        # Warm-up of both (connections, topic metadata), then alternating rounds.
        await ours()
        await asyncio.to_thread(baseline)
        ours_rates, baseline_rates = [], []
        for _ in range(rounds):
            ours_rates.append(await ours())
            baseline_rates.append(await asyncio.to_thread(baseline))
        raw.flush(30)
    finally:
        await channel.close()
        if in_process:
            await app.stop()
        else:
            app.stop()
    return report.result(
        "ingest", "events/s through IngestStream into Kafka (acks=all)",
        max(ours_rates), max(baseline_rates),
        "raw confluent-kafka producer loop (acks=all, same payloads and headers)",
        0.5, "higher",
        events_per_round=count, events_per_message=batch, rounds=rounds,
        ours_rounds=ours_rates, baseline_rounds=baseline_rates,
        payload_bytes=round(payload_bytes, 1), server="in-process" if in_process else "own process",
        machine=report.machine(),
    )


if __name__ == "__main__":
    from flywheel.bench.report import standalone

    standalone("ingest", add_arguments, run)
