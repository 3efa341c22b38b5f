"""kill -9 the feedback service (a real process) three times while labels stream in: the
labeled topic, read with read_committed, holds each label exactly once."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter

from feedback_kit import REPO, feedback, prediction, read_committed

from flywheel.common.grpc.client import wait_for_serving

N = 6000


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start(common, port: int, log, instance: str = "crash-test",
           wait: bool = True) -> subprocess.Popen:
    env = dict(os.environ,
               FLYWHEEL_NAMESPACE=common.namespace,
               FLYWHEEL_KAFKA_BOOTSTRAP=common.kafka_bootstrap,
               FLYWHEEL_REDIS_URL=common.redis_url,
               FLYWHEEL_SPEC_PATH=str(common.spec_path),
               FLYWHEEL_LOG_JSON="false",
               FLYWHEEL_FEEDBACK_GRPC_PORT=str(port),
               FLYWHEEL_FEEDBACK_METRICS_PORT="0",
               FLYWHEEL_FEEDBACK_INSTANCE_ID=instance,
               FLYWHEEL_FEEDBACK_JOIN_MAX_BATCH="200")
    process = subprocess.Popen([sys.executable, "-m", "flywheel.feedback"], env=env,
                               cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    if wait:
        wait_for_serving(f"127.0.0.1:{port}", timeout_s=60)
    return process


def test_kill_9_three_times_exactly_once(common, topics, raw_producer, kafka_bootstrap,
                                         tmp_path):
    port = _free_port()
    # Closed in the finally below, once the last process writing it is gone.
    log = open(tmp_path / "feedback.log", "wb")  # noqa: SIM115
    process = _start(common, port, log)
    try:
        now = time.time()
        for i in range(N):
            raw_producer.send(topics.predictions, f"k{i}", prediction(f"k{i}", now - 60))
        raw_producer.flush()

        def stream_labels() -> None:
            for i in range(N):
                raw_producer.send(topics.feedback, f"k{i}", feedback(f"k{i}", i % 2, now))
                if i % 100 == 99:
                    raw_producer.flush()
                    time.sleep(0.12)
            raw_producer.flush()

        streamer = threading.Thread(target=stream_labels)
        streamer.start()
        kills = 0
        for _ in range(3):
            time.sleep(1.5)
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            kills += 1
            process = _start(common, port, log)
        streamer.join(60)
        assert kills == 3

        labeled = read_committed(kafka_bootstrap, topics.labeled, N, timeout_s=120, settle_s=2)
        ids = Counter(e.prediction_id for e in labeled)
        assert set(ids) == {f"k{i}" for i in range(N)}
        assert max(ids.values()) == 1 and len(labeled) == N
        labels = {e.prediction_id: e.label.class_label for e in labeled}
        assert all(labels[f"k{i}"] == i % 2 for i in range(N))
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()


def test_two_instances_joining_in_parallel_and_a_kill_9_stay_exactly_once(
        common, topics, raw_producer, kafka_bootstrap, tmp_path):
    """Two instances as a StatefulSet runs them (feedback-0, feedback-1), started together;
    feedback-1 is killed -9 mid-stream and started again under its name, as Kubernetes
    reschedules it: it fences its predecessor, and each prediction has one labeled example."""
    n = N // 2
    ports = {name: _free_port() for name in ("feedback-0", "feedback-1")}
    log = open(tmp_path / "feedback.log", "wb")  # noqa: SIM115
    processes = {name: _start(common, port, log, name, wait=False)
                 for name, port in ports.items()}
    try:
        for port in ports.values():
            wait_for_serving(f"127.0.0.1:{port}", timeout_s=60)
        now = time.time()
        for i in range(n):
            raw_producer.send(topics.predictions, f"p{i}", prediction(f"p{i}", now - 60))
        raw_producer.flush()

        def stream_labels() -> None:
            for i in range(n):
                raw_producer.send(topics.feedback, f"p{i}", feedback(f"p{i}", i % 2, now))
                if i % 100 == 99:
                    raw_producer.flush()
                    time.sleep(0.1)
            raw_producer.flush()

        streamer = threading.Thread(target=stream_labels)
        streamer.start()
        time.sleep(1.5)
        processes["feedback-1"].send_signal(signal.SIGKILL)
        processes["feedback-1"].wait(10)
        processes["feedback-1"] = _start(common, ports["feedback-1"], log, "feedback-1")
        streamer.join(60)

        labeled = read_committed(kafka_bootstrap, topics.labeled, n, timeout_s=120, settle_s=2)
        ids = Counter(e.prediction_id for e in labeled)
        assert set(ids) == {f"p{i}" for i in range(n)}
        assert max(ids.values()) == 1 and len(labeled) == n
    finally:
        for process in processes.values():
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        log.close()
