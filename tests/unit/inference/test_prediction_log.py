"""The prediction log: every record acknowledged before Predict answers, reports served on the
event loop (a producer without a poll thread) or from a thread."""

from __future__ import annotations

import asyncio
import threading

import pytest

from flywheel.common.errors import Unavailable
from flywheel.inference.prediction_log import LogRecord, PredictionLog


class FakeProducer:
    """Queues records; `poll` runs the delivery reports of the records queued so far (on the
    calling thread), as confluent-kafka's poll(0) does."""

    def __init__(self, error: object = None) -> None:
        self.error = error
        self.queued: list[tuple[bytes, bytes]] = []
        self._reports: list = []
        self.polls = 0

    def produce_all(self, records, headers, on_delivery) -> None:
        for record in records:
            self.queued.append(record)
            self._reports.append(on_delivery)

    def poll(self) -> int:
        self.polls += 1
        reports, self._reports = self._reports, []
        for on_delivery in reports:
            on_delivery(self.error, None)
        return len(reports)


class KafkaError:
    def str(self) -> str:
        return "broker down"


def _records(n: int) -> list[LogRecord]:
    return [LogRecord(f"k{i}".encode(), b"v", "m", 1) for i in range(n)]


async def test_reports_served_on_the_loop_settle_the_publish():
    producer = FakeProducer()
    log = PredictionLog(producer.produce_all, "t", wait_for_ack=True, timeout_s=5,
                        serve_reports=producer.poll, poll_interval_s=0.001)
    await asyncio.wait_for(log.publish(_records(3)), 2)
    assert len(producer.queued) == 3
    # Nothing awaits a report any more: the polling stops.
    polls = producer.polls
    await asyncio.sleep(0.02)
    assert producer.polls == polls


async def test_concurrent_publishes_each_wait_for_their_own_records():
    producer = FakeProducer()
    log = PredictionLog(producer.produce_all, "t", wait_for_ack=True, timeout_s=5,
                        serve_reports=producer.poll)
    await asyncio.wait_for(asyncio.gather(*(log.publish(_records(n)) for n in (1, 2, 5))), 2)
    assert len(producer.queued) == 8


async def test_a_refused_record_fails_its_publish_served_on_the_loop():
    producer = FakeProducer(error=KafkaError())
    log = PredictionLog(producer.produce_all, "t", wait_for_ack=True, timeout_s=5,
                        serve_reports=producer.poll)
    with pytest.raises(Unavailable, match="broker down"):
        await asyncio.wait_for(log.publish(_records(2)), 2)


async def test_fire_and_forget_still_serves_the_reports():
    producer = FakeProducer()
    log = PredictionLog(producer.produce_all, "t", wait_for_ack=False, timeout_s=5,
                        serve_reports=producer.poll, poll_interval_s=0.001)
    await log.publish(_records(2))
    await asyncio.sleep(0.02)
    assert producer.polls >= 1 and not producer._reports


async def test_reports_from_a_thread_wake_the_loop():
    producer = FakeProducer()
    log = PredictionLog(producer.produce_all, "t", wait_for_ack=True, timeout_s=5)
    publish = asyncio.ensure_future(log.publish(_records(2)))
    await asyncio.sleep(0)
    thread = threading.Thread(target=producer.poll)
    thread.start()
    thread.join()
    await asyncio.wait_for(publish, 2)


async def test_unacknowledged_records_time_out():
    producer = FakeProducer()
    log = PredictionLog(producer.produce_all, "t", wait_for_ack=True, timeout_s=0.05,
                        serve_reports=lambda: 0)
    with pytest.raises(Unavailable, match="did not acknowledge"):
        await asyncio.wait_for(log.publish(_records(1)), 2)
