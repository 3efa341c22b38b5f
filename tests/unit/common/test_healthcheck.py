"""`python -m flywheel.common.grpc.healthcheck PORT`: exit 0 only on SERVING (or, with
--live, on any answer), 1 otherwise."""

from __future__ import annotations

from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from flywheel.common.grpc.healthcheck import main
from flywheel.infra.ports import free_port


@pytest.fixture
def health_server():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port, servicer
    server.stop(0)


def test_serving_passes_both_checks(health_server, capsys):
    port, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    assert main([str(port)]) == 0
    assert main([str(port), "--live"]) == 0
    assert "SERVING" in capsys.readouterr().out


def test_not_serving_is_alive_but_not_ready(health_server):
    port, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert main([str(port)]) == 1
    assert main([str(port), "--live"]) == 0


def test_nothing_listening_fails_both(capsys):
    port = free_port()
    assert main([str(port), "--timeout", "0.5"]) == 1
    assert main([str(port), "--timeout", "0.5", "--live"]) == 1
    assert "UNREACHABLE" in capsys.readouterr().out
