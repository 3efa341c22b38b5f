"""`docker compose up`, for real: the images built by scripts/images.sh (offline: no registry is
needed), compose.yaml with compose.offline.yaml on a real Docker engine, every container on
the host network at ports picked free for this run.

- every service turns healthy by its own healthcheck (inference once a model is registered
  through the `tools` service);
- `flywheel demo` through the `tools` container: the drift is recovered and nothing is lost,
  across a crash of the inference container (its process killed with SIGKILL), which the
  engine restarts under the `restart: unless-stopped` policy of compose.yaml;
- `docker compose down -v` leaves no container, volume or network behind;
- the gpu target builds where a CUDA base image can be had, and says why not where not.

Skipped, with the reason, where no Docker engine answers or the Compose plugin is missing
(`.ci/run` starts one where it can). Timings are printed for the record.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from flywheel.infra.ports import free_ports

ROOT = Path(__file__).resolve().parents[2]
FILES = ["-f", "compose.yaml", "-f", "compose.offline.yaml"]
PORT_VARIABLES = [
    "KAFKA_HOST_PORT", "KAFKA_CONTROLLER_HOST_PORT", "REDIS_HOST_PORT",
    *(f"{s}_HOST_PORT" for s in ("INGEST", "FEATURES", "INFERENCE", "FEEDBACK", "TRAINING")),
    *(f"{s}_METRICS_HOST_PORT" for s in ("INGEST", "FEATURES", "INFERENCE", "FEEDBACK", "TRAINING")),
    "INFERENCE_GPU_HOST_PORT", "INFERENCE_GPU_METRICS_HOST_PORT",
]
LONG_RUNNING = ["kafka", "redis", "features", "ingest", "feedback", "training", "inference"]
DEMO_S, DRIFT_AT_S, RATE = 60, 20, 200

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]


def _run(argv: list[str], timeout: float, env: dict[str, str] | None = None,
         ) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def _docker_unavailable() -> str | None:
    """Why the Docker tests cannot run here, or None."""
    given = os.environ.get("FLYWHEEL_DOCKER_UNAVAILABLE")
    if given:
        return given
    try:
        info = _run(["docker", "info", "--format", "{{.ServerVersion}}"], 20)
    except FileNotFoundError:
        return "no docker client on PATH"
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 20s"
    if info.returncode != 0:
        return f"no Docker engine answers `docker info`: {info.stderr.strip()[-300:]}"
    compose = _run(["docker", "compose", "version", "--short"], 20)
    if compose.returncode != 0:
        return "the Docker Compose plugin is missing (scripts/compose_plugin.sh builds it)"
    return None


class Stack:
    """One compose project of this test run: its own name, ports and volumes."""

    def __init__(self) -> None:
        self.project = f"fwtest-{uuid.uuid4().hex[:8]}"
        self.ports = dict(zip(PORT_VARIABLES, free_ports(len(PORT_VARIABLES))))
        # The shell's FLYWHEEL_* variables stay out of compose's interpolation and the CLI.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
        self.env.update({k: str(v) for k, v in self.ports.items()})

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return _run(["docker", "compose", "-p", self.project, *FILES, *args], timeout, self.env)

    def compose_ok(self, *args: str, timeout: float = 300) -> str:
        done = self.compose(*args, timeout=timeout)
        assert done.returncode == 0, f"docker compose {' '.join(args)}:\n{done.stderr[-3000:]}"
        return done.stdout

    def states(self) -> dict[str, dict]:
        """Service -> the `ps` record of its container (stopped ones included)."""
        out = self.compose_ok("ps", "-a", "--format", "json", timeout=60).strip()
        records = json.loads(out) if out.startswith("[") else [
            json.loads(line) for line in out.splitlines() if line.strip()]
        return {r["Service"]: r for r in records}

    def container(self, service: str) -> str:
        return self.compose_ok("ps", "-q", service, timeout=60).strip()

    def inspect(self, service: str) -> dict:
        done = _run(["docker", "inspect", self.container(service)], 60, self.env)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)[0]

    def wait_healthy(self, services: list[str], timeout_s: float) -> dict[str, dict]:
        deadline = time.monotonic() + timeout_s
        states: dict[str, dict] = {}
        while time.monotonic() < deadline:
            states = self.states()
            if all(states.get(s, {}).get("Health") == "healthy" for s in services):
                return states
            time.sleep(1)
        raise AssertionError(f"not healthy within {timeout_s:.0f}s: {self._summary(states)}\n"
                             f"{self.logs(services)}")

    def logs(self, services: list[str]) -> str:
        return self.compose("logs", "--no-color", "--tail", "30", *services, timeout=60).stdout[-6000:]

    @staticmethod
    def _summary(states: dict[str, dict]) -> str:
        return ", ".join(f"{s}={r.get('State')}/{r.get('Health') or '-'}"
                         for s, r in sorted(states.items()))

    def leftovers(self) -> dict[str, list[str]]:
        label = f"label=com.docker.compose.project={self.project}"
        found = {}
        for kind, argv in (("containers", ["docker", "ps", "-a", "-q"]),
                           ("volumes", ["docker", "volume", "ls", "-q"]),
                           ("networks", ["docker", "network", "ls", "-q"])):
            done = _run([*argv, "--filter", label], 60, self.env)
            assert done.returncode == 0, done.stderr
            found[kind] = done.stdout.split()
        return found

    def down(self) -> subprocess.CompletedProcess:
        return self.compose("--profile", "tools", "down", "-v", "--remove-orphans", timeout=300)


def _timed(what: str, started: float) -> float:
    seconds = time.monotonic() - started
    print(f"[compose] {what}: {seconds:.1f}s")
    return seconds


@pytest.fixture(scope="module")
def images() -> str:
    reason = _docker_unavailable()
    if reason:
        pytest.skip(f"Docker tests need a running engine and the Compose plugin: {reason}")
    started = time.monotonic()
    done = _run(["bash", "scripts/images.sh", "--offline"], 1800)
    assert done.returncode == 0, f"scripts/images.sh --offline failed:\n{done.stderr[-4000:]}"
    print(done.stdout[-1500:])
    _timed("scripts/images.sh --offline", started)
    return done.stdout


@pytest.fixture(scope="module")
def stack(images: str):
    stack = Stack()
    try:
        yield stack
    finally:
        stack.down()


@pytest.fixture(scope="module")
def model_dir():
    """The demo's seed model as an ONNX file, in a folder the containers' user can read."""
    from flywheel.demo.scenario import FEATURE_NAMES
    from flywheel.demo.seed import train_seed_model

    rng = np.random.default_rng(3)
    features = rng.normal(size=(400, len(FEATURE_NAMES))).astype(np.float32)
    labels = (features[:, 0] + features[:, 1] > 0).astype(np.int64)
    artifact, _ = train_seed_model(features, labels, seed=3)
    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o755)
        path = Path(folder) / "seed.onnx"
        path.write_bytes(artifact)
        path.chmod(0o644)
        yield Path(folder)


def test_every_service_turns_healthy_by_its_own_healthcheck(stack: Stack, model_dir: Path):
    from flywheel.demo.scenario import ENTITY_TYPE, FEATURE_NAMES, MODEL

    started = time.monotonic()
    stack.compose_ok("up", "-d", timeout=600)
    # Inference stays unhealthy until a model is promoted; everything else on its own.
    states = stack.wait_healthy([s for s in LONG_RUNNING if s != "inference"], 300)
    _timed("up -d to healthy (all but inference)", started)
    assert states["topics"]["State"] == "exited" and states["topics"]["ExitCode"] == 0, states

    registered = stack.compose_ok(
        "run", "--rm", "-T", "-v", f"{model_dir}:/models:ro", "tools", "models", "register",
        "/models/seed.onnx", "--name", MODEL, "--entity-type", ENTITY_TYPE,
        "--features", ",".join(FEATURE_NAMES), "--task", "binary_classification",
        "--promote", "--json", timeout=180,
    )
    version = json.loads(registered.strip().splitlines()[-1])
    assert version["name"] == MODEL and "champion" in version["aliases"], version
    stack.wait_healthy(LONG_RUNNING, 180)
    _timed("up -d to all healthy, a model registered through tools", started)


def test_demo_through_compose_recovers_and_loses_nothing_across_an_inference_crash(stack: Stack):
    stack.wait_healthy(LONG_RUNNING, 120)
    before = stack.inspect("inference")
    demo = subprocess.Popen(
        ["docker", "compose", "-p", stack.project, *FILES, "run", "--rm", "-T", "tools",
         "demo", "--duration", str(DEMO_S), "--drift-at", str(DRIFT_AT_S), "--rate", str(RATE),
         "--json"],
        cwd=ROOT, env=stack.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    stderr: list[str] = []
    past_drift = threading.Event()

    def read_stderr():
        for line in demo.stderr:
            stderr.append(line)
            if line.startswith("t=") and float(line[2:].split("s", 1)[0]) >= DRIFT_AT_S + 10:
                past_drift.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        assert past_drift.wait(240), "the demo never got past the drift:\n" + "".join(stderr)[-3000:]
        # A crash, not a stop: `docker kill` counts as a manual stop to the engine, whose
        # restart policy then leaves the container down; a SIGKILL of its process does not.
        os.kill(before["State"]["Pid"], signal.SIGKILL)
        crashed = time.monotonic()
        stdout, _ = demo.communicate(timeout=300)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    reader.join(10)
    context = f"{''.join(stderr)[-3000:]}\n{stack.logs(['inference', 'training'])}"
    assert demo.returncode in (0, 1), context
    report = json.loads(stdout.strip().splitlines()[-1])
    print(json.dumps({k: report[k] for k in (
        "events", "predictions", "labels", "lost", "duplicated_labels", "recovered",
        "seconds_to_recover", "accuracy_before_drift", "accuracy_after_drift",
        "accuracy_recovered", "versions_promoted")}))
    assert report["lost"] == 0, context
    assert report["duplicated_labels"] == 0, context
    assert report["events"] > 0.9 * RATE * DEMO_S, context
    assert report["labels"] > 0.8 * report["predictions"], context
    assert report["recovered"], f"accuracy did not recover\n{json.dumps(report)}\n{context}"
    assert report["ok"], f"{json.dumps(report)}\n{context}"

    after = stack.inspect("inference")
    assert after["RestartCount"] >= before["RestartCount"] + 1, after["State"]
    assert after["State"]["Pid"] != before["State"]["Pid"]
    stack.wait_healthy(["inference"], 120)
    _timed("inference crash to the demo's end", crashed)


def test_down_leaves_no_container_volume_or_network(stack: Stack):
    assert any(stack.leftovers().values()), "the stack should be up before this test"
    started = time.monotonic()
    done = stack.down()
    assert done.returncode == 0, done.stderr[-3000:]
    _timed("down -v", started)
    assert stack.leftovers() == {"containers": [], "volumes": [], "networks": []}


def test_the_gpu_target_builds_where_a_cuda_base_can_be_had_and_says_why_not_elsewhere(images):
    done = _run(["bash", "scripts/images.sh", "--offline", "--gpu"], 1800)
    assert done.returncode == 0, done.stderr[-4000:]
    dotenv = dict(line.split("=", 1) for line in (ROOT / ".env").read_text().splitlines()
                  if line and not line.startswith("#"))
    gpu_image = f"{dotenv['MESH_IMAGE']}:{dotenv['MESH_IMAGE_TAG']}-gpu"
    skipped = [line for line in done.stdout.splitlines() if line.startswith("images: gpu: not built")]
    if skipped:
        print(skipped[0])
        assert "CUDA base" in skipped[0] and "cannot be pulled" in skipped[0], skipped
    else:
        inspect = _run(["docker", "image", "inspect", gpu_image], 60)
        assert inspect.returncode == 0, f"{gpu_image} was not built:\n{done.stdout[-3000:]}"
