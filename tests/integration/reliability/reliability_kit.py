"""Helpers of the fault-injection tests: a private broker that can be killed, stopped and
restarted; a paced producer that keeps a ledger of what Kafka acknowledged; a reader that
takes every record of a topic back; one line of figures per test."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from flywheel.common.grpc.client import wait_for_serving_async
from flywheel.common.kafka.producer import Producer
from flywheel.common.settings import CommonSettings
from flywheel.inference.app import InferenceApp
from flywheel.inference.settings import InferenceSettings
from flywheel.infra import InfraSettings, LocalInfra
from flywheel.infra.local import InfraStatus

# Features of the `churn` champion the inference tests register (see conftest's `champion`).
N_FEATURES = 24


async def start_inference(common: CommonSettings, settings: InferenceSettings) -> InferenceApp:
    """The inference service in-process, SERVING (stopped again when it never gets there)."""
    app = InferenceApp(common, settings)
    try:
        await app.start()
        await wait_for_serving_async(f"127.0.0.1:{app.port}", 60.0)
    except BaseException:
        await app.stop()
        raise
    return app


def report(test: str, **figures: object) -> None:
    """The figures of one test, on one line (shown with ``pytest -s``)."""
    listed = ", ".join(f"{name}={value}" for name, value in figures.items())
    print(f"\n[reliability] {test}: {listed}", flush=True)


class PrivateBroker:
    """A Kafka broker of its own (with the Redis that ``LocalInfra`` always starts beside it)
    under ``root``, on ports that stay the same across restarts, so the producer's bootstrap
    address stays valid. The environment's external addresses are ignored on purpose."""

    def __init__(self, root: Path) -> None:
        settings = InfraSettings.from_env(external_kafka_bootstrap=None, external_redis_url=None)
        self.infra = LocalInfra(root, settings=settings)
        self.status: InfraStatus | None = None
        self.port: int | None = None
        self.restarts = 0

    def up(self) -> InfraStatus:
        self.status = self.infra.up(kafka_port=self.port)
        self.port = self.status.kafka.port  # type: ignore[union-attr]
        return self.status

    @property
    def bootstrap(self) -> str:
        assert self.status is not None
        return self.status.kafka_bootstrap

    @property
    def pid(self) -> int:
        assert self.status is not None
        return self.status.pids["kafka"]

    def signal(self, sig: signal.Signals) -> None:
        os.kill(self.pid, sig)

    def kill(self, timeout_s: float = 10.0) -> None:
        """SIGKILL the broker JVM and wait until it is gone (reaped: it is our child)."""
        pid = self.pid
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout_s
        while not _gone(pid):
            if time.monotonic() > deadline:
                raise AssertionError(f"broker pid {pid} still there {timeout_s}s after SIGKILL")
            time.sleep(0.02)

    def restart(self) -> InfraStatus:
        """``LocalInfra.up`` again: the same data folder, the same broker port."""
        previous = self.port
        status = self.up()
        assert status.kafka.port == previous, (status.kafka.port, previous)  # type: ignore[union-attr]
        self.restarts += 1
        return status

    def down(self) -> None:
        """Stops everything, also a broker left SIGSTOPped by a failing test."""
        if self.status is not None:
            for pid in self.status.pids.values():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        self.infra.down()


def _gone(pid: int) -> bool:
    """True once the whole process is gone. Its main thread shows as a zombie while other
    threads still exit (a JVM flushing to disk), with its sockets still open: only the
    reaping (it is our child) or the end of every thread tells that it is really over."""
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        return reaped == pid
    except ChildProcessError:
        pass
    try:
        return len(os.listdir(f"/proc/{pid}/task")) == 0
    except OSError:
        return True


class PacedStream:
    """Produces ``total`` records (value = the record's number) through the project's
    Producer at about ``rate`` records a second, in a thread, and keeps the ledger: which
    numbers Kafka acknowledged, which deliveries failed."""

    def __init__(self, producer: Producer, topic: str, total: int, rate: float) -> None:
        self.producer = producer
        self.topic = topic
        self.total = total
        self.rate = rate
        self.produced = 0
        self.acked: list[int] = []  # appended by the producer's poll thread
        self.failed: list[tuple[int, str]] = []
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="paced-stream", daemon=True)

    def _on_delivery(self, error, message) -> None:
        number = int(message.value())
        if error is None:
            self.acked.append(number)
        else:
            self.failed.append((number, error.str()))

    def _run(self) -> None:
        chunk = max(1, int(self.rate / 20))
        started = time.monotonic()
        try:
            while self.produced < self.total:
                end = min(self.total, self.produced + chunk)
                for number in range(self.produced, end):
                    self.producer.produce_raw(
                        self.topic, str(number), str(number).encode(), [], self._on_delivery
                    )
                self.produced = end
                ahead = self.produced / self.rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
        except BaseException as error:  # noqa: BLE001 - reported by join()
            self.error = error

    def start(self) -> PacedStream:
        self._thread.start()
        return self

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "the producing thread did not finish"
        if self.error is not None:
            raise self.error

    def wait_acked(self, count: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.acked) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {len(self.acked)} of {count} acknowledged")
            time.sleep(0.01)


def read_topic(bootstrap: str, topic: str, partitions: int, timeout_s: float = 60.0) -> list[bytes]:
    """The value of every record of ``topic``, offset 0 up to each partition's end."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": "reliability-reader",
        "enable.auto.commit": False, "enable.partition.eof": False,
    })
    values: list[bytes] = []
    try:
        ends = {}
        for partition in range(partitions):
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            ends[partition] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        reached = dict.fromkeys(range(partitions), 0)
        deadline = time.monotonic() + timeout_s
        while any(reached[p] < ends[p] for p in ends):
            assert time.monotonic() < deadline, f"read {reached} of {ends} in {timeout_s}s"
            for message in consumer.consume(2000, 0.5):
                if message.error() is None:
                    values.append(message.value())
                    reached[message.partition()] = message.offset() + 1
    finally:
        consumer.close()
    return values


def tally(acked: list[int], consumed_values: list[bytes]) -> dict[str, int]:
    """Lost (acknowledged, never consumed) and duplicated (consumed twice) records."""
    consumed = [int(v) for v in consumed_values]
    unique = set(consumed)
    return {
        "acked": len(set(acked)),
        "consumed": len(consumed),
        "lost": len(set(acked) - unique),
        "duplicates": len(consumed) - len(unique),
    }
