"""A single-node Apache Kafka broker in KRaft mode (broker and controller in one JVM).

The jars come from Maven Central through ``deploy/kafka/pom.xml`` into a cache shared by
every infra root; each root has its own config, data and logs under ``<root>/kafka``.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import shutil
import socket
import subprocess
import uuid
from pathlib import Path

from flywheel.common.kafka.security import secured
from flywheel.infra import processes
from flywheel.infra.errors import InfraError
from flywheel.infra.processes import ProcessRef
from flywheel.infra.secure import SecureMaterial
from flywheel.infra.settings import InfraSettings
from flywheel.infra.state import ComponentState

_JAR_VERSION = re.compile(r"^kafka_2\.\d+-(\d+\.\d+\.\d+(?:[-.][\w.]+)?)\.jar$")
_FETCHED_MARKER = ".fetched"

# librdkafka reports every refused connection of a readiness probe; keep them out of stderr
# unless the application routes this logger somewhere.
_client_log = logging.getLogger("flywheel.infra.kafka_client")
_client_log.addHandler(logging.NullHandler())


def jars_version(jars_dir: Path) -> str | None:
    """The broker version named by the ``kafka_2.13-<version>.jar`` in ``jars_dir``."""
    if not (jars_dir / _FETCHED_MARKER).exists():
        return None
    for jar in jars_dir.glob("kafka_2.*.jar"):
        match = _JAR_VERSION.match(jar.name)
        if match:
            return match.group(1)
    return None


def fetch_jars(settings: InfraSettings) -> str:
    """Make sure the broker jars are in ``settings.jars_dir``; return the Kafka version.

    Maven copies into a temporary sibling folder that is renamed into place, so an
    interrupted fetch never leaves a half-filled cache behind.
    """
    version = jars_version(settings.jars_dir)
    if version:
        return version
    mvn = processes.resolve_programs({"mvn": settings.mvn})["mvn"]
    if not settings.pom.is_file():
        raise InfraError(
            f"Kafka pom not found at {settings.pom}: run from a source checkout of flywheel"
        )
    settings.jars_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = settings.jars_dir.with_name(f"{settings.jars_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    command = [
        mvn, "-q", "-B", "-f", str(settings.pom),
        "dependency:copy-dependencies", f"-DoutputDirectory={staging}",
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    except subprocess.TimeoutExpired as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise InfraError("fetching the Kafka jars with Maven took over 900s") from exc
    if result.returncode != 0 or not any(staging.glob("kafka_2.*.jar")):
        shutil.rmtree(staging, ignore_errors=True)
        output = (result.stdout + result.stderr).strip().splitlines()[-30:]
        raise InfraError(
            f"fetching the Kafka jars failed: {' '.join(command)} exited {result.returncode}",
            "\n".join(output),
        )
    (staging / _FETCHED_MARKER).write_text(" ".join(command) + "\n")
    shutil.rmtree(settings.jars_dir, ignore_errors=True)
    os.replace(staging, settings.jars_dir)
    version = jars_version(settings.jars_dir)
    if version is None:
        raise InfraError(f"no kafka_2.13-<version>.jar in {settings.jars_dir} after fetching")
    return version


def broker_config(host: str, port: int, controller_port: int, data: str) -> dict[str, str]:
    """The broker config: one node (broker and controller), sized for a laptop or CI runner."""
    return {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{host}:{controller_port}",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": data,
        # Topics are created on purpose, with their partition counts, never by a typo.
        "auto.create.topics.enable": "false",
        "num.partitions": "3",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "num.network.threads": "2",
        "num.io.threads": "4",
        "log.segment.bytes": str(64 * 1024 * 1024),
    }


def server_properties(settings: InfraSettings, data: Path, port: int, controller_port: int,
                      secure: SecureMaterial | None = None) -> str:
    """``broker_config`` as the text of a server.properties file (with the SASL_SSL listener
    of `secure`, when given)."""
    values = broker_config(settings.host, port, controller_port, str(data))
    if secure is not None:
        values.update(secure.broker_overrides(settings.host, port, controller_port))
    return "".join(f"{key}={value}\n" for key, value in values.items())


def _java_command(settings: InfraSettings, java: str, logs: Path, heap: str) -> list[str]:
    command = [
        java, f"-Xmx{heap}",
        "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true", f"-Dkafka.logs.dir={logs}",
    ]
    if settings.log4j_config.is_file():
        command.append(f"-Dlog4j2.configurationFile={settings.log4j_config}")
    return command + ["-cp", str(settings.jars_dir / "*")]


def start(settings: InfraSettings, java: str, port: int, controller_port: int,
          secure: SecureMaterial | None = None) -> ComponentState:
    """Format the storage when it is new, start the broker detached, return its state.

    A secured broker (`secure`) keeps its own folder, ``kafka-secure``: its storage is
    formatted with the SCRAM users, which a plain one never had.
    Does not wait for readiness: see ``wait_ready``.
    """
    version = fetch_jars(settings)
    home = settings.root / ("kafka-secure" if secure else "kafka")
    data, logs = home / "data", home / "logs"
    data.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    config = home / "server.properties"
    # It holds the broker's own SCRAM password when secured: owner-only.
    config.touch(mode=0o600)
    config.write_text(server_properties(settings, data, port, controller_port, secure))
    if not (data / "meta.properties").exists():
        _format_storage(settings, java, config, logs,
                        secure.scram_users() if secure else [])
    argv = _java_command(settings, java, logs, settings.kafka_heap) + ["kafka.Kafka", str(config)]
    pid = processes.spawn_detached(argv, logs / "stdout.log")
    return ComponentState(
        name="kafka", source="local", address=f"{settings.host}:{port}", host=settings.host,
        port=port, pid=pid, marker=f"kafka.Kafka {config}", version=version,
        log=str(logs / "server.log"), data=str(data),
        extra={"controller_port": controller_port, "stdout": str(logs / "stdout.log"),
               "secure": secure is not None},
    )


def new_cluster_id() -> str:
    """A random KRaft cluster id: 16 bytes in URL-safe base64 without padding. One that starts
    with '-' is drawn again, as Kafka's own generator does, because the storage tool would read
    it as an option (a 1 in 64 chance per format otherwise)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def _format_storage(settings: InfraSettings, java: str, config: Path, logs: Path,
                    scram_users: list[str]) -> None:
    cluster_id = new_cluster_id()
    argv = _java_command(settings, java, logs, "256m") + [
        "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config),
    ]
    for user in scram_users:
        argv += ["--add-scram", user]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    except subprocess.TimeoutExpired as exc:
        raise InfraError("formatting the Kafka storage took over 120s") from exc
    if result.returncode != 0:
        raise InfraError(
            f"formatting the Kafka storage failed (exit {result.returncode})",
            (result.stdout + result.stderr).strip(),
        )


def probe(bootstrap: str, timeout: float = 2.0, client: dict[str, str] | None = None) -> bool:
    """True when the broker at ``bootstrap`` answers a metadata request naming a broker;
    `client`: the security properties to reach it with (default: this process's)."""
    if not _any_port_open(bootstrap, timeout):
        return False
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    config = {
        "bootstrap.servers": bootstrap,
        "logger": _client_log,
        "socket.connection.setup.timeout.ms": max(1000, int(timeout * 1000)),
        "reconnect.backoff.max.ms": 200,
    }
    admin = AdminClient({**config, **client} if client is not None else secured(config))
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException:
        return False
    return bool(metadata.brokers)


def _any_port_open(bootstrap: str, timeout: float) -> bool:
    """Cheap first step of the probe: a refused TCP connect costs no client set-up."""
    for address in bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        host = host.split("://")[-1].strip("[]")
        try:
            with socket.create_connection((host, int(port)), timeout=timeout):
                return True
        except (OSError, ValueError):
            continue
    return False


def wait_ready(state: ComponentState, timeout: float,
               client: dict[str, str] | None = None) -> None:
    """Block until the broker answers metadata requests; fail with its log tail otherwise."""
    ref = ProcessRef(state.pid, state.marker) if state.pid and state.marker else None
    logs = [Path(state.log)] if state.log else []
    if state.extra.get("stdout"):
        logs.append(Path(state.extra["stdout"]))
    processes.wait_for(
        state.describe("Kafka broker"), lambda: probe(state.address, client=client), ref, logs,
        timeout
    )
