"""The CLI finds its mesh and the mesh heals: the five services as processes (`flywheel up`)
on the session's real Kafka and Redis; every later command runs from another folder with
nothing but FLYWHEEL_HOME set.

- `status`, `models list` and `models register --promote` reach the mesh from its state (the
  announcement reaches inference through the broker named there: inference turns SERVING);
- a service killed with SIGKILL is restarted by the supervisor, SERVING again, counted;
- `up` on a partly running mesh starts only what is missing;
- a `kill -9` of the feedback service in the middle of `flywheel demo` loses nothing;
- `down` leaves no process behind, the supervisor included.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from flywheel.infra import processes
from flywheel.testing.names import Names

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(600)


def flywheel(env: dict[str, str], cwd: Path, *args: str, timeout: float = 120):
    return subprocess.run([sys.executable, "-m", "flywheel.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def alive(pid: int) -> bool:
    return processes.command_line(pid) is not None


def wait_until(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout_s:.0f}s (last: {last!r})")


class Mesh:
    def __init__(self, home: Path, elsewhere: Path) -> None:
        self.home = home
        self.elsewhere = elsewhere  # a folder with no .flywheel: the CLI must not need one
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
        self.env["FLYWHEEL_HOME"] = str(home)

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return flywheel(self.env, self.elsewhere, *args, timeout=timeout)

    def status(self) -> dict:
        done = self.cli("status", "--json", timeout=60)
        assert done.returncode in (0, 3), done.stderr
        return json.loads(done.stdout)

    def service(self, name: str) -> dict:
        return next(s for s in self.status()["services"] if s["name"] == name)

    def wait_serving_again(self, name: str, old_pid: int, restarts: int) -> dict:
        def back():
            service = self.service(name)
            ok = (service["pid"] != old_pid and service["restarts"] >= restarts
                  and service["health"] == "SERVING")
            return service if ok else None

        return wait_until(back, 120, f"{name} restarted and SERVING")

    def log_tails(self) -> str:
        out = []
        for log in sorted((self.home / "logs").glob("*.log")):
            out.append(f"--- {log.name}")
            out.extend(log.read_text(errors="replace").splitlines()[-12:])
        return "\n".join(out)


@pytest.fixture(scope="module")
def mesh(infra, tmp_path_factory):
    base = tmp_path_factory.mktemp("mesh-cli")
    home, elsewhere = base / "home", base / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    env.update(
        FLYWHEEL_KAFKA_BOOTSTRAP=infra.kafka_bootstrap, FLYWHEEL_REDIS_URL=infra.redis_url,
        FLYWHEEL_NAMESPACE=Names.fresh().namespace, FLYWHEEL_HOME=str(home),
        FLYWHEEL_SPEC_PATH=str(ROOT / "flywheel.yaml"),
    )
    up = flywheel(env, ROOT, "up", "--free-ports", "--json", timeout=300)
    assert up.returncode == 0, f"flywheel up failed:\n{up.stderr[-4000:]}"
    mesh = Mesh(home, elsewhere)
    try:
        yield mesh
    finally:
        state = json.loads((home / "mesh.json").read_text())
        pids = {n: s["pid"] for n, s in state["services"].items()}
        pids["supervisor"] = state["supervisor"]["pid"]
        down = mesh.cli("down", "--json", timeout=180)
        assert down.returncode == 0, down.stderr[-2000:]
        left = {name: pid for name, pid in pids.items() if alive(pid)}
        assert not left, f"processes left behind by `flywheel down`: {left}"
        assert mesh.status()["up"] is False


def test_commands_reach_the_mesh_from_another_folder_with_only_its_home(mesh, tmp_path):
    from flywheel.demo.scenario import ENTITY_TYPE, FEATURE_NAMES, MODEL
    from flywheel.demo.seed import train_seed_model

    status = mesh.status()
    assert status["up"] and status["home"] == str(mesh.home)
    assert status["supervisor"]["running"], status
    assert {s["name"] for s in status["services"] if s["running"]} == {
        "ingest", "features", "inference", "feedback", "training"}

    listed = mesh.cli("models", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == {"models": {}}

    rng = np.random.default_rng(3)
    features = rng.normal(size=(400, len(FEATURE_NAMES))).astype(np.float32)
    labels = (features[:, 0] > 0).astype(np.int64)
    artifact, _ = train_seed_model(features, labels, 3)
    (tmp_path / "model.onnx").write_bytes(artifact)
    register = mesh.cli("models", "register", str(tmp_path / "model.onnx"), "--name", MODEL,
                        "--features", ",".join(FEATURE_NAMES), "--entity-type", ENTITY_TYPE,
                        "--promote", "--json")
    assert register.returncode == 0, register.stderr
    assert "rdkafka" not in register.stderr
    version = json.loads(register.stdout.splitlines()[-1])["version"]

    # Announced on the mesh's broker and namespace: inference loads it and serves.
    wait_until(lambda: mesh.service("inference")["health"] == "SERVING", 120,
               f"inference serving {MODEL} v{version}\n{mesh.log_tails()}")
    listed = json.loads(mesh.cli("models", "list", "--json").stdout)
    assert [(v["version"], v["aliases"]) for v in listed["models"][MODEL]] == [
        (version, ["champion"])]
    assert (mesh.home / "registry" / MODEL).is_dir()
    assert not (mesh.elsewhere / ".flywheel").exists()


def test_the_supervisor_restarts_a_service_killed_with_sigkill(mesh):
    before = mesh.service("ingest")
    os.kill(before["pid"], signal.SIGKILL)
    after = mesh.wait_serving_again("ingest", before["pid"], before["restarts"] + 1)
    assert after["address"] == before["address"]
    text = mesh.cli("status")
    assert text.returncode == 0 and "restarts" in text.stdout
    row = next(line for line in text.stdout.splitlines() if line.startswith("ingest "))
    assert f" {after['restarts']} " in row
    log = (mesh.home / "logs" / "supervisor.log").read_text()
    assert "ingest exited unexpectedly" in log and "restarted ingest" in log


def test_up_on_a_partly_running_mesh_starts_only_what_is_missing(mesh):
    status = mesh.status()
    supervisor = status["supervisor"]["pid"]
    os.kill(supervisor, signal.SIGKILL)  # so that only `up` can bring training back
    wait_until(lambda: not alive(supervisor), 30, "supervisor gone")
    pids = {s["name"]: s["pid"] for s in status["services"]}
    os.kill(pids["training"], signal.SIGKILL)
    wait_until(lambda: not alive(pids["training"]), 30, "training gone")

    up = mesh.cli("up", "--json", timeout=300)
    assert up.returncode == 0, up.stderr
    assert "started training; the rest was already running" in up.stderr
    after = json.loads(up.stdout.splitlines()[-1])
    now = {s["name"]: s["pid"] for s in after["services"]}
    assert now["training"] != pids["training"]
    assert {n: p for n, p in now.items() if n != "training"} == {
        n: p for n, p in pids.items() if n != "training"}
    assert after["supervisor"]["running"] and after["supervisor"]["pid"] != supervisor
    assert mesh.service("training")["health"] == "SERVING"


def test_a_kill_9_during_the_demo_loses_nothing(mesh):
    demo = subprocess.Popen(
        [sys.executable, "-m", "flywheel.cli", "demo", "--duration", "40", "--drift-at", "15",
         "--rate", "100", "--json"],
        cwd=mesh.elsewhere, env=mesh.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )
    stderr: list[str] = []
    serving = threading.Event()

    def read_stderr():
        for line in demo.stderr:
            stderr.append(line)
            if "serving (holdout accuracy" in line:
                serving.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        assert serving.wait(180), "".join(stderr)[-3000:]
        time.sleep(10)  # the fault lands mid-traffic, with labels flowing
        victim = mesh.service("feedback")
        os.kill(victim["pid"], signal.SIGKILL)
        stdout, _ = demo.communicate(timeout=300)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    reader.join(10)
    assert demo.returncode in (0, 1), "".join(stderr)[-3000:]
    report = json.loads(stdout.strip().splitlines()[-1])
    context = f"{json.dumps(report)}\n{''.join(stderr)[-2000:]}\n{mesh.log_tails()}"
    print(json.dumps({k: report[k] for k in ("events", "predictions", "labels", "lost",
                                             "duplicated_labels")}))
    assert report["lost"] == 0, context
    assert report["duplicated_labels"] == 0, context
    assert report["labels"] > 0, context
    feedback = mesh.wait_serving_again("feedback", victim["pid"], victim["restarts"] + 1)
    assert feedback["restarts"] >= 1
