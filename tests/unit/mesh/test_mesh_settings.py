"""The supervisor's view of the services agrees with the services' own settings."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from flywheel.common.settings import ServiceSettings
from flywheel.mesh import state as mesh_state
from flywheel.mesh.services import SERVICES, waves
from flywheel.mesh.settings import MeshSettings
from flywheel.mesh.state import MeshState, ServiceState


def settings_class(name: str) -> type[ServiceSettings]:
    module = importlib.import_module(f"flywheel.{name}.settings")
    return next(v for v in vars(module).values() if isinstance(v, type)
                and issubclass(v, ServiceSettings) and v.__module__ == module.__name__)


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_default_ports_and_linked_settings_exist(service):
    fields = settings_class(service.name).model_fields
    assert fields["grpc_port"].default == service.grpc_port
    assert fields["metrics_port"].default == service.metrics_port
    for suffix in [*service.links, *service.data_dirs]:
        assert suffix.lower() in fields, f"{service.env_prefix}{suffix} sets nothing"
    assert settings_class(service.name).model_config["env_prefix"] == service.env_prefix


def test_features_start_before_inference():
    order = [s.name for wave in waves() for s in wave]
    assert order.index("features") < order.index("inference")
    assert sorted(order) == sorted(s.name for s in SERVICES)


def test_ports_from_defaults_environment_or_free(tmp_path):
    env = {"FLYWHEEL_HOME": str(tmp_path), "FLYWHEEL_INGEST_GRPC_PORT": "6000"}
    settings = MeshSettings.from_env(env, cwd=tmp_path)
    assert settings.ports["ingest"] == (6000, 9201)
    assert settings.ports["inference"] == (50053, 9203)
    free = MeshSettings.from_env(env, free_ports=True, cwd=tmp_path)
    assert free.ports["ingest"] == (6000, None)
    assert free.ports["training"] == (None, None)
    with pytest.raises(ValueError, match="FLYWHEEL_INGEST_GRPC_PORT"):
        MeshSettings.from_env({**env, "FLYWHEEL_INGEST_GRPC_PORT": "x"}, cwd=tmp_path)


def test_paths_are_absolute_and_under_home(tmp_path):
    settings = MeshSettings.from_env({}, cwd=tmp_path, namespace="n1")
    assert settings.home == (tmp_path / ".flywheel").resolve()
    assert settings.registry_uri == str(settings.home / "registry")
    assert settings.spec_path == (tmp_path / "flywheel.yaml").resolve()
    assert settings.namespace == "n1"
    given = MeshSettings.from_env({"FLYWHEEL_REGISTRY_URI": "models"}, cwd=tmp_path)
    assert given.registry_uri == str((tmp_path / "models").resolve())


def test_state_round_trip_and_corrupt_file(tmp_path):
    service = ServiceState("ingest", 123, "-m flywheel.ingest", "127.0.0.1:1", 1, 2, "/l", 1.0)
    state = MeshState("/h", "ns", "k:1", "redis://r", "/s", "/reg", 5.0,
                      infra_started=["kafka"], services={"ingest": service})
    path = tmp_path / "mesh.json"
    mesh_state.save(path, state)
    assert mesh_state.load(path) == state
    assert mesh_state.load(tmp_path / "none.json") is None
    Path(path).write_text("{not json")
    with pytest.raises(ValueError):
        mesh_state.load(path)


def test_ports_are_read_like_every_setting_empty_or_zero_is_unset_and_bounds_are_named(tmp_path):
    env = {"FLYWHEEL_INGEST_GRPC_PORT": "", "flywheel_training_metrics_port": "9999",
           "FLYWHEEL_FEATURES_GRPC_PORT": "0"}
    settings = MeshSettings.from_env(env, cwd=tmp_path)
    assert settings.ports["ingest"] == (50051, 9201)
    assert settings.ports["training"][1] == 9999
    assert settings.ports["features"][0] == 50052
    with pytest.raises(ValueError, match="FLYWHEEL_INGEST_METRICS_PORT='70000'"):
        MeshSettings.from_env({"FLYWHEEL_INGEST_METRICS_PORT": "70000"}, cwd=tmp_path)
    with pytest.raises(ValueError, match="FLYWHEEL_NAMESPACE"):
        MeshSettings.from_env({"FLYWHEEL_NAMESPACE": "not one"}, cwd=tmp_path)


def test_the_given_environment_alone_is_read_not_the_process_one(tmp_path, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_INGEST_GRPC_PORT", "7001")
    monkeypatch.setenv("FLYWHEEL_REGISTRY_URI", "elsewhere")
    settings = MeshSettings.from_env({"FLYWHEEL_REGISTRY_URI": ""}, cwd=tmp_path)
    assert settings.ports["ingest"][0] == 50051
    assert settings.registry_uri == str(settings.home / "registry")
    assert MeshSettings.from_env(cwd=tmp_path).ports["ingest"][0] == 7001
