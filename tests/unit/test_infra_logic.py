"""Pure logic of the local infrastructure: ports, state file, settings, names."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import pytest

from flywheel.infra import InfraSettings, MissingBinaryError
from flywheel.infra.kafka_broker import broker_config, jars_version, new_cluster_id
from flywheel.infra.ports import free_ports, port_is_free, resolve_ports
from flywheel.infra.processes import ProcessRef, command_line, is_running, tail
from flywheel.infra.settings import pom_kafka_version
from flywheel.infra.state import ComponentState, InfraState, load_state, save_state
from flywheel.testing import Names


def test_free_ports_are_distinct_and_bindable():
    ports = free_ports(5)
    assert len(set(ports)) == 5
    assert all(port_is_free(p) for p in ports)


def test_port_in_use_is_not_free():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert not port_is_free(sock.getsockname()[1])


def test_a_port_whose_server_died_with_connections_in_time_wait_is_free():
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Kafka and Redis do
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()  # the server side closes first: its end stays in TIME_WAIT
        client.close()
    assert port_is_free(port)


def test_resolve_ports_keeps_given_and_fills_the_rest():
    given = free_ports(1)[0]
    ports = resolve_ports({"kafka": given, "controller": None, "redis": None})
    assert ports["kafka"] == given
    assert len(set(ports.values())) == 3


def test_resolve_ports_rejects_a_port_in_use():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        busy = sock.getsockname()[1]
        with pytest.raises(ValueError, match=f"redis port {busy} .* already in use"):
            resolve_ports({"redis": busy})


def test_resolve_ports_rejects_out_of_range():
    with pytest.raises(ValueError, match="out of range"):
        resolve_ports({"kafka": 70000})


def _state(root: Path) -> InfraState:
    kafka = ComponentState(
        name="kafka", source="local", address="127.0.0.1:9092", host="127.0.0.1", port=9092,
        pid=123, marker="kafka.Kafka /x/server.properties", version="4.1.1",
        extra={"controller_port": 9093},
    )
    redis = ComponentState(name="redis", source="external", address="redis://h:1/0")
    return InfraState(str(root), {"kafka": kafka, "redis": redis}, started_at=1.5)


def test_state_file_round_trip(tmp_path):
    path = tmp_path / "infra" / "state.json"
    state = _state(tmp_path)
    save_state(path, state)
    assert load_state(path) == state
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]  # no temp file left


def test_missing_state_is_none_and_corrupt_state_is_an_error(tmp_path):
    path = tmp_path / "state.json"
    assert load_state(path) is None
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_state(path)
    path.write_text('{"format": 99}')
    with pytest.raises(ValueError, match="unknown state format"):
        load_state(path)


def test_settings_follow_the_environment(tmp_path):
    env = {
        "FLYWHEEL_HOME": str(tmp_path / "home"),
        "FLYWHEEL_KAFKA_JARS_DIR": str(tmp_path / "jars"),
        "FLYWHEEL_KAFKA_BOOTSTRAP": "broker:9092",
    }
    settings = InfraSettings.from_env(env)
    assert settings.root == (tmp_path / "home" / "infra").resolve()
    assert settings.jars_dir == (tmp_path / "jars").resolve()
    assert settings.external_kafka_bootstrap == "broker:9092"
    assert settings.external_redis_url is None


def test_default_settings_use_the_working_directory_and_cache(tmp_path):
    settings = InfraSettings.from_env({"XDG_CACHE_HOME": str(tmp_path / "c")}, cwd=tmp_path)
    version = pom_kafka_version(settings.pom)
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    assert settings.root == tmp_path.resolve() / ".flywheel" / "infra"
    assert settings.jars_dir == tmp_path / "c" / "flywheel" / f"kafka-{version}" / "lib"
    assert settings.state_file == settings.root / "state.json"


def test_empty_variables_are_unset_and_the_process_environment_is_left_out(tmp_path, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_REDIS_URL", "redis://process:6379/0")
    env = {"FLYWHEEL_HOME": str(tmp_path), "FLYWHEEL_KAFKA_BOOTSTRAP": "",
           "FLYWHEEL_KAFKA_JARS_DIR": "", "XDG_CACHE_HOME": str(tmp_path / "c")}
    settings = InfraSettings.from_env(env)
    assert settings.external_kafka_bootstrap is None and settings.external_redis_url is None
    assert settings.jars_dir.is_relative_to(tmp_path / "c")
    assert InfraSettings.from_env().external_redis_url == "redis://process:6379/0"


def test_kafka_version_comes_from_the_jar_name(tmp_path):
    (tmp_path / "kafka_2.13-4.1.1.jar").touch()
    (tmp_path / "kafka-clients-4.1.1.jar").touch()
    assert jars_version(tmp_path) is None  # not a completed fetch yet
    (tmp_path / ".fetched").touch()
    assert jars_version(tmp_path) == "4.1.1"


def test_broker_config_never_creates_topics_by_itself():
    config = broker_config("127.0.0.1", 1000, 1001, "/data")
    assert config["auto.create.topics.enable"] == "false"
    assert config["controller.quorum.voters"] == "1@127.0.0.1:1001"
    assert config["offsets.topic.replication.factor"] == "1"
    assert config["group.initial.rebalance.delay.ms"] == "0"


def test_missing_binary_error_names_each_program_and_its_package():
    error = MissingBinaryError({"java": "java", "redis-server": "redis-server"})
    message = str(error)
    assert "\n" not in message
    assert "apt-get install openjdk-17-jre-headless" in message
    assert "apt-get install redis-server" in message


def test_process_identity_needs_pid_and_marker():
    me = command_line(os.getpid())
    assert me is not None
    assert is_running(ProcessRef(os.getpid(), "python"))
    assert not is_running(ProcessRef(os.getpid(), "no-such-marker-in-cmdline"))
    assert not is_running(ProcessRef(2**22 + 17, ""))  # above the largest pid


def test_tail_returns_the_last_lines(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert tail(log, 2) == "line 98\nline 99"
    assert "does not exist" in tail(tmp_path / "missing.log")


def test_names_are_fresh_and_prefixed():
    first, second = Names.fresh(), Names.fresh()
    assert first != second
    assert re.fullmatch(r"t[0-9a-f]{8}", first.namespace)
    assert first.topic("flywheel.events.v1") == f"{first.namespace}.flywheel.events.v1"
    assert first.group("features") == f"{first.namespace}.features"
    assert first.key("entity:1") == f"{first.namespace}:entity:1"


def test_cluster_ids_never_start_with_a_dash_the_storage_tool_would_read_as_an_option(monkeypatch):
    import uuid

    # The first draw encodes to "-..." (0xf8 -> '-' in URL-safe base64); the second does not.
    draws = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=b"\x01" * 16)])
    monkeypatch.setattr(uuid, "uuid4", lambda: next(draws))
    assert new_cluster_id() == "AQEBAQEBAQEBAQEBAQEBAQ"
    monkeypatch.undo()
    ids = [new_cluster_id() for _ in range(2000)]
    assert all(len(i) == 22 and re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{21}", i) for i in ids)
