"""How a command finds its mesh: explicit variables, then the mesh state, then the local
infrastructure's state, then the defaults; and where FLYWHEEL_HOME is when unset."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from flywheel.commands import CommandError
from flywheel.commands.context import mesh_context
from flywheel.infra.home import home_dir
from flywheel.infra.state import ComponentState, InfraState, save_state
from flywheel.mesh import state as mesh_state
from flywheel.mesh.context import MeshNotUp, resolve
from flywheel.mesh.state import MeshState, ServiceState


def write_mesh(home: Path, **fields) -> MeshState:
    services = {
        name: ServiceState(name, 1, f"-m flywheel.{name}", f"127.0.0.1:{port}", port, port + 1,
                           str(home / "logs" / f"{name}.log"), 1.0)
        for name, port in (("ingest", 41001), ("features", 41003), ("inference", 41005),
                           ("feedback", 41007), ("training", 41009))
    }
    state = MeshState(**{
        "home": str(home), "namespace": "ns1", "kafka_bootstrap": "127.0.0.1:39092",
        "redis_url": "redis://127.0.0.1:36379/0", "spec_path": "/specs/flywheel.yaml",
        "registry_uri": str(home / "registry"), "started_at": 1.0, "services": services,
        **fields,
    })
    mesh_state.save(home / "mesh.json", state)
    return state


def test_the_mesh_state_gives_every_address(tmp_path):
    home = tmp_path / "home"
    write_mesh(home)
    context = resolve({"FLYWHEEL_HOME": str(home)}, cwd=tmp_path / "elsewhere")
    assert context.kafka_bootstrap == "127.0.0.1:39092"
    assert context.redis_url == "redis://127.0.0.1:36379/0"
    assert context.namespace == "ns1"
    assert context.registry_uri == str(home / "registry")
    assert context.spec_path == Path("/specs/flywheel.yaml")
    assert context.address("training") == "127.0.0.1:41009"
    assert {context.origins[k] for k in ("kafka_bootstrap", "redis_url", "namespace",
                                         "registry_uri", "training")} == {"mesh state"}
    settings = context.common_settings()
    assert (settings.kafka_bootstrap, settings.namespace) == ("127.0.0.1:39092", "ns1")
    assert context.environ()["FLYWHEEL_REDIS_URL"] == "redis://127.0.0.1:36379/0"


def test_explicit_variables_win_over_the_state(tmp_path):
    home = tmp_path / "home"
    write_mesh(home)
    env = {
        "FLYWHEEL_HOME": str(home),
        "FLYWHEEL_KAFKA_BOOTSTRAP": "broker:9092",
        "FLYWHEEL_NAMESPACE": "other",
        "FLYWHEEL_REGISTRY_URI": "models",
        "FLYWHEEL_TRAINING_GRPC_HOST": "training.svc",
    }
    context = resolve(env, cwd=tmp_path)
    assert context.kafka_bootstrap == "broker:9092"
    assert context.origins["kafka_bootstrap"] == "FLYWHEEL_KAFKA_BOOTSTRAP"
    assert context.namespace == "other"
    assert context.registry_uri == str(tmp_path / "models")  # relative: against the folder
    assert context.address("training") == "training.svc:50055"  # the port takes its default
    assert context.redis_url == "redis://127.0.0.1:36379/0"     # not given: still the state's
    assert context.address("ingest") == "127.0.0.1:41001"


def test_kafka_and_redis_from_the_infra_state_when_no_mesh_runs(tmp_path):
    home = tmp_path / "home"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        marker = "import time; time.sleep(60)"
        save_state(home / "infra" / "state.json", InfraState(str(home / "infra"), {
            "kafka": ComponentState("kafka", "local", "127.0.0.1:39999", pid=sleeper.pid,
                                    marker=marker),
            "redis": ComponentState("redis", "local", "redis://127.0.0.1:39998/0", pid=99999999,
                                    marker="redis-server"),  # not running: not used
        }, time.time()))
        context = resolve({"FLYWHEEL_HOME": str(home)}, cwd=tmp_path)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert context.kafka_bootstrap == "127.0.0.1:39999"
    assert context.origins["kafka_bootstrap"] == "infra state"
    assert context.redis_url is None
    assert context.grpc == {}
    with pytest.raises(MeshNotUp):
        context.require(["kafka", "redis"])


def test_nothing_up_and_nothing_given_says_what_to_run(tmp_path):
    context = resolve({"FLYWHEEL_HOME": str(tmp_path / "home")}, cwd=tmp_path)
    assert (context.kafka_bootstrap, context.redis_url, context.registry_uri) == (None,) * 3
    assert context.namespace == "" and context.spec_path == tmp_path / "flywheel.yaml"
    with pytest.raises(MeshNotUp, match=r"the mesh is not up .*run `flywheel up`"):
        context.require(["registry"])
    with pytest.raises(CommandError) as failure:
        mesh_context("registry", environ={"FLYWHEEL_HOME": str(tmp_path / "home")}, cwd=tmp_path)
    assert failure.value.exit_code == 3
    assert "\n" not in str(failure.value)


def test_a_registry_folder_under_home_is_used_without_a_mesh(tmp_path):
    (tmp_path / "home" / "registry").mkdir(parents=True)
    context = resolve({"FLYWHEEL_HOME": str(tmp_path / "home")}, cwd=tmp_path)
    assert context.registry_uri == str(tmp_path / "home" / "registry")
    assert context.origins["registry_uri"] == "default"


def test_given_infrastructure_without_a_state_reaches_services_on_default_ports(tmp_path):
    env = {"FLYWHEEL_HOME": str(tmp_path / "home"), "FLYWHEEL_KAFKA_BOOTSTRAP": "kafka:19092",
           "FLYWHEEL_INGEST_GRPC_HOST": "ingest"}
    context = resolve(env, cwd=tmp_path)
    assert context.address("ingest") == "ingest:50051"
    assert context.address("features") == "127.0.0.1:50052"
    assert context.origins["features"] == "default"


def test_a_corrupt_state_is_an_error_not_a_guess(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "mesh.json").write_text("{oops")
    with pytest.raises(CommandError, match="not valid JSON"):
        mesh_context("kafka", environ={"FLYWHEEL_HOME": str(home)}, cwd=tmp_path)


def test_a_kafka_that_does_not_answer_is_one_line_before_any_client(tmp_path):
    from flywheel.infra.ports import free_port

    home = tmp_path / "home"
    write_mesh(home, kafka_bootstrap=f"127.0.0.1:{free_port()}")
    with pytest.raises(CommandError, match=r"Kafka at 127\.0\.0\.1:\d+ \(from mesh state\) "
                                           r"does not answer") as failure:
        mesh_context("kafka", environ={"FLYWHEEL_HOME": str(home)}, cwd=tmp_path)
    assert failure.value.exit_code == 3


def test_home_is_the_variable_then_the_nearest_started_folder_then_here(tmp_path):
    project = tmp_path / "project"
    deep = project / "src" / "pkg"
    deep.mkdir(parents=True)
    started_above = [p for p in tmp_path.parents if (p / ".flywheel" / "mesh.json").is_file()]
    if not started_above:  # a mesh started from a folder above the test's would be found
        assert home_dir({}, cwd=deep) == deep / ".flywheel"
    write_mesh(project / ".flywheel")
    assert home_dir({}, cwd=deep) == project / ".flywheel"
    (deep / ".flywheel").mkdir()  # a folder with no state does not count
    assert home_dir({}, cwd=deep) == project / ".flywheel"
    assert home_dir({"FLYWHEEL_HOME": str(tmp_path / "h")}, cwd=deep) == tmp_path / "h"
    context = resolve({}, cwd=deep)
    assert context.home == project / ".flywheel" and context.namespace == "ns1"
