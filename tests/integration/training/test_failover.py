"""Two training services on one mesh: exactly one is active (the controller lease), the other
stands by; a kill -9 of the active in the middle of a run hands over to the standby within
seconds, the cut run reads interrupted, and no version is ever registered twice or half."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from training_kit import Concept, produce, write_spec

from flywheel.common.grpc.client import health_status, wait_for_serving
from flywheel.common.kafka.admin import ensure_topics
from flywheel.common.kafka.topics import Topics
from flywheel.common.registry import ModelRegistry
from flywheel.infra.ports import free_port
from flywheel.v1 import training_pb2, training_pb2_grpc

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
DEADLINE_S = 10
# Spec params of the held trainer: FLYWHEEL reads the folder from the spec itself.
HELD = "{{window: 1000, holdout_fraction: 0.25, min_examples: 300, " \
       "trainer: 'training_kit:held_trainer', params: {{folder: '{folder}'}}}}"


def start_training(env: dict[str, str], port: int, log_path: Path) -> subprocess.Popen:
    log = open(log_path, "ab")  # noqa: SIM115 - kept open for the child's life
    return subprocess.Popen(
        [sys.executable, "-m", "flywheel.training"], cwd=ROOT, stdout=log,
        stderr=subprocess.STDOUT,
        env={**env, "FLYWHEEL_TRAINING_GRPC_PORT": str(port)})


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def call(port: int, method: str, request):
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = training_pb2_grpc.TrainingServiceStub(channel)
        return getattr(stub, method)(request, timeout=DEADLINE_S)


def wait_until(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def test_kill9_of_the_active_mid_run_hands_over_without_a_half_or_double_version(
        names, kafka_bootstrap, redis_url, tmp_path):
    hold = tmp_path / "hold-dir"
    hold.mkdir()
    (hold / "hold").touch()
    spec = write_spec(tmp_path / "spec.yaml", "{debounce_seconds: 0}",
                      training=HELD.format(folder=hold))
    topics = Topics(names.namespace)
    ensure_topics(kafka_bootstrap, topics.all())
    produce(kafka_bootstrap, topics.labeled, Concept(seed=3).examples("a", 600, version=0))
    registry_root = tmp_path / "registry"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    env.update(
        FLYWHEEL_NAMESPACE=names.namespace, FLYWHEEL_KAFKA_BOOTSTRAP=kafka_bootstrap,
        FLYWHEEL_REDIS_URL=redis_url, FLYWHEEL_SPEC_PATH=str(spec),
        FLYWHEEL_REGISTRY_URI=str(registry_root), FLYWHEEL_LOG_JSON="false",
        FLYWHEEL_TRAINING_DATA_DIR=str(tmp_path / "data"),  # shared by both, as on a volume
        FLYWHEEL_TRAINING_METRICS_PORT="0", FLYWHEEL_TRAINING_LEASE_TTL_S="3",
        FLYWHEEL_TRAINING_CHECK_INTERVAL_S="0.2",
        PYTHONPATH=os.pathsep.join([str(ROOT / "services"), str(HERE),
                                    os.environ.get("PYTHONPATH", "")]),
    )
    first_port, second_port = free_port(), free_port()
    first = start_training(env, first_port, tmp_path / "training-1.log")
    second = None
    try:
        wait_for_serving(f"127.0.0.1:{first_port}", 90.0)
        second = start_training(env, second_port, tmp_path / "training-2.log")
        # The standby serves health, NOT_SERVING, and refuses the service's calls by name.
        wait_until(lambda: health_status(f"127.0.0.1:{second_port}", timeout_s=1.0)
                   == "NOT_SERVING", 90, "the standby's health")
        with pytest.raises(grpc.RpcError) as refused:
            call(second_port, "ListModelVersions",
                 training_pb2.ListModelVersionsRequest(model_name="churn"))
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "standby" in refused.value.details()
        assert f":{first.pid}:" in refused.value.details()  # names the active holder

        wait_until(lambda: call(first_port, "ListTrainingRuns",
                                training_pb2.ListTrainingRunsRequest()) is not None, 30, "runs")
        # Wait until the active has the examples, then catch a run inside training.
        finished = (training_pb2.TRAINING_RUN_STATE_SUCCEEDED,
                    training_pb2.TRAINING_RUN_STATE_FAILED)
        deadline = time.monotonic() + 60
        while not (hold / "inside").exists():
            assert time.monotonic() < deadline, "no run reached training"
            run_id = call(first_port, "TriggerRetrain", training_pb2.TriggerRetrainRequest(
                model_name="churn", reason="to be cut")).run_id
            # Training, or failed for too few examples yet (then asked again).
            wait_until(lambda run_id=run_id: (hold / "inside").exists() or call(
                first_port, "GetTrainingRun", training_pb2.GetTrainingRunRequest(
                    run_id=run_id)).run.state in finished, 60, "the run to train or fail")

        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        killed_at = time.monotonic()
        wait_for_serving(f"127.0.0.1:{second_port}", 60.0)
        takeover_s = time.monotonic() - killed_at
        print(f"standby SERVING {takeover_s:.1f} s after the kill -9 of the active")

        cut = call(second_port, "GetTrainingRun",
                   training_pb2.GetTrainingRunRequest(run_id=run_id)).run
        assert cut.state == training_pb2.TRAINING_RUN_STATE_INTERRUPTED, cut.error
        assert cut.candidate_version == 0 and "register" not in cut.stage_seconds
        registry = ModelRegistry(str(registry_root))
        assert registry.versions("churn") == []
        assert not list(registry_root.glob("churn/.staging-*"))

        # The new active trains the same window to one whole version.
        (hold / "hold").unlink()
        again = call(second_port, "TriggerRetrain", training_pb2.TriggerRetrainRequest(
            model_name="churn", reason="after the takeover")).run_id
        done = wait_until(lambda: (lambda r: r if r.state not in (
            training_pb2.TRAINING_RUN_STATE_QUEUED, training_pb2.TRAINING_RUN_STATE_RUNNING)
            else None)(call(second_port, "GetTrainingRun",
                            training_pb2.GetTrainingRunRequest(run_id=again)).run),
            120, "the run on the new active")
        assert done.state == training_pb2.TRAINING_RUN_STATE_SUCCEEDED, done.error
        versions = registry.versions("churn")
        assert [v.version for v in versions] == [1]
        assert [v.lineage.training_run_id for v in versions] == [again]
    finally:
        for process in (first, second):
            if process is not None:
                stop(process)
