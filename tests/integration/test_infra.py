"""The local infrastructure against the real thing: a Kafka broker and a Redis server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
import redis
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from flywheel.infra import InfraSettings, LocalInfra, MissingBinaryError
from flywheel.infra.processes import command_line
from flywheel.infra.settings import pom_kafka_version
from flywheel.testing.kafka import create_topics

FLYWHEEL = str(Path(sys.executable).with_name("flywheel"))
KAFKA_VERSION = pom_kafka_version(InfraSettings.from_env().pom)


def _cli(*args: str, env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [FLYWHEEL, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _clean_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("FLYWHEEL_KAFKA_BOOTSTRAP", "FLYWHEEL_REDIS_URL")}
    env.update(FLYWHEEL_HOME=str(home), **extra)
    return env


def _round_trip(bootstrap: str, topic: str, group: str) -> tuple[bytes, bytes]:
    """Produce one record to ``topic`` and read it back with a fresh consumer group."""
    value = uuid.uuid4().bytes
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    producer.produce(topic, key=b"k", value=value)
    assert producer.flush(30) == 0, "the record was not delivered within 30s"
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
    })
    try:
        consumer.subscribe([topic])
        for _ in range(60):
            message = consumer.poll(1.0)
            if message is not None and message.error() is None:
                return message.value(), value
        raise AssertionError(f"no record came back from {topic} within 60 polls")
    finally:
        consumer.close()


def test_session_infra_answers(infra, kafka_bootstrap, redis_url, names, make_topic):
    assert infra.source in {"local", "external", "testcontainers", "local+external"}
    metadata = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10)
    assert metadata.brokers, "the broker answered metadata without naming itself"

    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    assert client.ping() is True
    client.set(names.key("probe"), b"1", ex=60)
    assert client.get(names.key("probe")) == b"1"

    topic = make_topic("infra.probe", partitions=2)
    assert topic == f"{names.namespace}.infra.probe"
    got, sent = _round_trip(kafka_bootstrap, topic, names.group("probe"))
    assert got == sent


def test_broker_refuses_to_create_topics_on_its_own(kafka_bootstrap, names):
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "message.timeout.ms": 3000})
    errors = []
    producer.produce(names.topic("never.created"), value=b"x",
                     on_delivery=lambda err, _msg: errors.append(err))
    producer.flush(10)
    assert errors and errors[0] is not None, "a record to a missing topic was accepted"


def test_cli_up_status_produce_down(tmp_path):
    env = _clean_env(tmp_path / "home")
    pids: list[int] = []
    try:
        up = _cli("infra", "up", "--json", env=env)
        assert up.returncode == 0, up.stderr
        started = json.loads(up.stdout)
        pids = list(started["pids"].values())
        assert started["kafka_version"] == KAFKA_VERSION
        assert started["running"] is True and len(pids) == 2

        status = _cli("infra", "status", "--json", env=env)
        assert status.returncode == 0, status.stderr
        now = json.loads(status.stdout)
        assert now["running"] is True
        assert now["kafka"]["ready"] and now["redis"]["ready"]
        assert now["kafka_bootstrap"] == started["kafka_bootstrap"]
        assert now["redis_url"] == started["redis_url"]
        assert now["pids"] == started["pids"]
        assert Path(now["kafka"]["log"]).stat().st_size > 0, "the broker log is empty"

        readable = _cli("infra", "status", env=env)
        assert KAFKA_VERSION in readable.stdout and now["kafka_bootstrap"] in readable.stdout

        bootstrap = now["kafka_bootstrap"]
        create_topics(bootstrap, ["cli.probe"], partitions=1)
        got, sent = _round_trip(bootstrap, "cli.probe", "cli-probe")
        assert got == sent
        assert redis.Redis.from_url(now["redis_url"], socket_timeout=5).ping() is True
    finally:
        down = _cli("infra", "down", "--json", env=env)
        if down.returncode != 0:  # leave no broker behind, whatever broke the CLI
            LocalInfra(tmp_path / "home" / "infra").down()
    assert down.returncode == 0, down.stderr
    assert sorted(json.loads(down.stdout)["stopped"].values()) == sorted(pids)
    alive = [pid for pid in pids if command_line(pid) is not None]
    assert not alive, f"processes still alive after down: {alive}"

    after = _cli("infra", "status", "--json", env=env)
    assert after.returncode == 3 and json.loads(after.stdout)["running"] is False


def test_cli_reports_external_addresses_without_starting_anything(tmp_path, infra):
    env = _clean_env(
        tmp_path / "home",
        FLYWHEEL_KAFKA_BOOTSTRAP=infra.kafka_bootstrap, FLYWHEEL_REDIS_URL=infra.redis_url,
    )
    up = _cli("infra", "up", "--json", env=env)
    assert up.returncode == 0, up.stderr
    reported = json.loads(up.stdout)
    assert reported["pids"] == {}
    assert reported["kafka"]["source"] == reported["redis"]["source"] == "external"
    assert reported["kafka_bootstrap"] == infra.kafka_bootstrap
    assert reported["redis_url"] == infra.redis_url
    assert reported["running"] is True


def test_cli_names_a_missing_program_in_one_line(tmp_path):
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    env = _clean_env(tmp_path / "home", PATH=str(empty_bin))
    env.pop("JAVA_HOME", None)
    result = _cli("infra", "up", env=env, timeout=60)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "java" in lines[0] and "apt-get install openjdk-17-jre-headless" in lines[0]
    assert "redis-server" in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "home" / "infra" / "state.json").exists()


def test_api_names_an_injected_missing_program(tmp_path):
    settings = replace(InfraSettings.from_env(), redis_server="no-such-redis-server-xyz",
                       external_kafka_bootstrap=None, external_redis_url=None)
    with pytest.raises(MissingBinaryError) as caught:
        LocalInfra(tmp_path / "infra", settings=settings).up(timeout=5)
    assert caught.value.missing == {"redis-server": "no-such-redis-server-xyz"}
    assert "apt-get install redis-server" in str(caught.value)
