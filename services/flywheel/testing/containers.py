"""Kafka and Redis as containers through testcontainers, where a Docker engine answers.

The broker runs the official ``apache/kafka`` image with the same settings as the local
broker (``flywheel.infra.kafka_broker.broker_config``), advertised on a fixed host port so
clients outside the container reach it. Used only where testcontainers is installed and a
Docker engine answers with both images already there (see ``endpoints.docker_answers``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from flywheel.infra import kafka_broker, redis_server
from flywheel.infra.ports import free_port
from flywheel.infra.processes import wait_for
from flywheel.testing.endpoints import Endpoints

KAFKA_IMAGE = "apache/kafka:4.1.1"
REDIS_IMAGE = "redis:7"


@contextmanager
def container_endpoints(timeout: float = 180.0) -> Iterator[Endpoints]:
    """Start both containers, wait until they answer, stop and remove them on exit."""
    from testcontainers.core.container import DockerContainer

    host_port = free_port()
    config = kafka_broker.broker_config("localhost", 9092, 9093, "/tmp/kraft-combined-logs")
    # Clients outside reach PLAINTEXT on the host port; the broker reaches itself on BROKER.
    config.update({
        "listeners": "PLAINTEXT://0.0.0.0:9092,BROKER://0.0.0.0:9094,CONTROLLER://localhost:9093",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{host_port},BROKER://localhost:9094",
        "listener.security.protocol.map":
            "PLAINTEXT:PLAINTEXT,BROKER:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "BROKER",
    })
    kafka = DockerContainer(KAFKA_IMAGE).with_bind_ports(9092, host_port)
    for key, value in config.items():
        kafka = kafka.with_env("KAFKA_" + key.upper().replace(".", "_"), value)
    kafka = kafka.with_env("KAFKA_HEAP_OPTS", "-Xmx512m")
    redis = DockerContainer(REDIS_IMAGE).with_exposed_ports(6379)

    with ExitStack() as stack:
        stack.enter_context(kafka)
        stack.enter_context(redis)
        bootstrap = f"127.0.0.1:{host_port}"
        redis_url = f"redis://{redis.get_container_host_ip()}:{redis.get_exposed_port(6379)}/0"
        wait_for(f"Kafka container at {bootstrap}", lambda: kafka_broker.probe(bootstrap),
                 None, [], timeout)
        wait_for(f"Redis container at {redis_url}", lambda: redis_server.probe(redis_url),
                 None, [], timeout)
        yield Endpoints(bootstrap, redis_url, "testcontainers")
