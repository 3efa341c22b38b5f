"""The supervisor's process handling, with stand-in services: small processes that answer
grpc.health.v1 the way they are told (SERVING, NOT_SERVING, or crash at start). No Kafka or
Redis: the infrastructure and topic steps are replaced by fixed addresses."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest

from flywheel.common.registry import CHAMPION, ModelRegistry
from flywheel.infra import processes
from flywheel.mesh import Mesh, MeshError, MeshState
from flywheel.mesh.settings import MeshSettings

STAND_IN = textwrap.dedent(f"""\
    #!{sys.executable}
    import os, signal, sys, time
    from concurrent import futures
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    name = sys.argv[sys.argv.index("-m") + 1].rsplit(".", 1)[-1]
    behaviour = os.environ.get("STAND_IN_" + name.upper(), "serve")
    if behaviour == "crash":
        print(name + ": cannot start: boom", flush=True)
        sys.exit(3)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port("127.0.0.1:" + os.environ["FLYWHEEL_" + name.upper() + "_GRPC_PORT"])
    server.start()
    status = health_pb2.HealthCheckResponse.SERVING if behaviour == "serve" else \\
        health_pb2.HealthCheckResponse.NOT_SERVING
    servicer.set("", status)
    print(name + " listening; features at " +
          os.environ.get("FLYWHEEL_INFERENCE_FEATURE_STORE_TARGET", "-"), flush=True)
    signal.signal(signal.SIGTERM, lambda *_: (server.stop(0), sys.exit(0)))
    while True:
        time.sleep(1)
""")


def alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped has exited): it has a command line."""
    return processes.command_line(pid) is not None


@pytest.fixture
def make_mesh(tmp_path, monkeypatch):
    stand_in = tmp_path / "stand-in-python"
    stand_in.write_text(STAND_IN)
    stand_in.chmod(0o755)
    started: list[Mesh] = []

    def make(**behaviours: str) -> Mesh:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
        env.update({f"STAND_IN_{name.upper()}": b for name, b in behaviours.items()})
        env["FLYWHEEL_HOME"] = str(tmp_path / "home")
        settings = replace(
            MeshSettings.from_env(env, free_ports=True, cwd=tmp_path),
            python=str(stand_in), start_timeout_s=8.0, stop_timeout_s=5.0,
        )
        mesh = Mesh(settings)

        def no_infra(report, inherited):
            return MeshState(
                home=str(settings.home), namespace="t", kafka_bootstrap="127.0.0.1:1",
                redis_url="redis://127.0.0.1:2/0", spec_path=str(settings.spec_path),
                registry_uri=settings.registry_uri, started_at=time.time(),
            )

        monkeypatch.setattr(mesh, "_start_infra", no_infra)
        monkeypatch.setattr(mesh, "_ensure_topics", lambda state, report: None)
        started.append(mesh)
        return mesh

    yield make
    for mesh in started:  # whatever a failing test left
        try:
            mesh.down()
        except MeshError:
            pass


def test_up_status_down(make_mesh):
    mesh = make_mesh(inference="not_serving")
    lines: list[str] = []
    state = mesh.up(report=lines.append)
    assert set(state.services) == {"ingest", "features", "inference", "feedback", "training"}
    # No champion in the registry: inference may wait for its first model.
    assert any("inference" in line and "no model in the registry" in line for line in lines)
    status = mesh.status()
    health = {s.name: s.health for s in status.services}
    assert health == {"ingest": "SERVING", "features": "SERVING", "inference": "NOT_SERVING",
                      "feedback": "SERVING", "training": "SERVING"}
    assert not status.serving
    inference_log = Path(state.services["inference"].log).read_text()
    assert f"features at {state.address('features')}" in inference_log
    assert mesh.up() == state  # already up: nothing started twice

    pids = [s.pid for s in state.services.values()]
    assert all(alive(pid) for pid in pids)
    assert mesh.down() is not None
    assert not [pid for pid in pids if alive(pid)]
    assert mesh.status().state is None
    assert mesh.down() is None


def test_inference_must_serve_once_the_registry_has_a_champion(make_mesh):
    mesh = make_mesh(inference="not_serving")
    registry = ModelRegistry(mesh.settings.registry_uri)
    meta = registry.register("churn", b"onnx bytes", task=1, entity_type="customer",
                             feature_names=["f00"])
    registry.set_alias("churn", CHAMPION, meta.version)
    with pytest.raises(MeshError, match="inference not SERVING") as failure:
        mesh.up()
    assert "inference listening" in failure.value.detail
    assert not mesh.settings.state_file.exists()


def test_a_crashing_service_fails_up_with_its_log_and_stops_the_rest(make_mesh):
    mesh = make_mesh(training="crash")
    with pytest.raises(MeshError, match="training exited while starting") as failure:
        mesh.up()
    assert "cannot start: boom" in failure.value.detail
    logs = Path(mesh.settings.logs_dir)
    started = [p.stem for p in logs.glob("*.log")]
    assert "features" in started and "inference" not in started
    assert not mesh.settings.state_file.exists()
    assert mesh.status().services == []


def wait_until(predicate, timeout_s: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached within {timeout_s}s")


def test_the_supervisor_restarts_a_killed_service(make_mesh):
    mesh = make_mesh()
    state = mesh.up()
    assert state.supervisor is not None and alive(state.supervisor.pid)
    victim = state.services["features"]
    os.kill(victim.pid, signal.SIGKILL)

    def restarted():
        status = mesh.status()
        features = next(s for s in status.services if s.name == "features")
        return features if features.restarts == 1 and features.health == "SERVING" else None

    features = wait_until(restarted, what="features restarted and SERVING")
    assert features.pid != victim.pid and features.address == victim.grpc_address
    payload = mesh.status().to_json()
    assert payload["supervisor"]["running"] is True
    assert {s["name"]: s["restarts"] for s in payload["services"]}["features"] == 1
    log = Path(state.supervisor.log).read_text()
    assert "features exited unexpectedly" in log and "restarted features" in log

    current = mesh.load_state()
    pids = [s.pid for s in current.services.values()] + [current.supervisor.pid]
    mesh.down()
    assert not [pid for pid in pids if alive(pid)], "down left a process behind"


def test_up_on_a_partly_running_mesh_starts_only_what_is_missing(make_mesh):
    mesh = make_mesh()
    state = mesh.up()
    processes.stop(processes.ProcessRef(state.supervisor.pid, state.supervisor.marker), 5)
    os.kill(state.services["feedback"].pid, signal.SIGKILL)
    wait_until(lambda: not alive(state.services["feedback"].pid), what="feedback gone")

    lines: list[str] = []
    healed = mesh.up(report=lines.append)
    assert "started feedback; the rest was already running" in lines
    for name in ("ingest", "features", "inference", "training"):
        assert healed.services[name].pid == state.services[name].pid, name
    feedback = healed.services["feedback"]
    assert feedback.pid != state.services["feedback"].pid and feedback.restarts == 1
    assert feedback.grpc_address == state.services["feedback"].grpc_address
    assert healed.supervisor.pid != state.supervisor.pid and alive(healed.supervisor.pid)
    assert all(s.health == "SERVING" for s in mesh.status().services)
