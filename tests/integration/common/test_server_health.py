"""The shared gRPC server: health follows real readiness; errors map to the right status."""

from __future__ import annotations

import asyncio

import grpc
import pytest
import redis.asyncio as aioredis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from flywheel.common.errors import InvalidArgument
from flywheel.common.grpc.readiness import Readiness
from flywheel.common.grpc.server import GrpcServer
from flywheel.common.settings import ServiceSettings
from flywheel.v1 import training_pb2, training_pb2_grpc


class _Servicer(training_pb2_grpc.TrainingServiceServicer):
    async def GetTrainingRun(self, request, context):
        if not request.run_id:
            raise InvalidArgument("run_id is required", field="run_id")
        if request.run_id == "boom":
            raise RuntimeError("secret internal detail")
        return training_pb2.GetTrainingRunResponse(run=training_pb2.TrainingRun(run_id=request.run_id))


async def _status(stub, service: str = "") -> int:
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
    return reply.status


async def _wait_status(stub, wanted: int, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        if await _status(stub) == wanted:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"health never became {wanted}")


@pytest.fixture
async def server_and_gate():
    gate = asyncio.Event()
    readiness = Readiness(["flywheel.v1.TrainingService"], interval_s=0.05)
    readiness.add_check("gate", gate.is_set)
    server = GrpcServer(ServiceSettings(grpc_port=0, shutdown_grace_s=0.5), readiness)
    server.add_service(training_pb2_grpc.add_TrainingServiceServicer_to_server, _Servicer(),
                       "flywheel.v1.TrainingService")
    await server.start()
    yield server, gate
    await server.stop()


async def test_health_is_not_serving_until_ready_then_serving(server_and_gate):
    server, gate = server_and_gate
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        await _wait_status(stub, health_pb2.HealthCheckResponse.NOT_SERVING)
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        assert await _status(stub, "flywheel.v1.TrainingService") == not_serving
        gate.set()
        await _wait_status(stub, health_pb2.HealthCheckResponse.SERVING)
        assert await _status(stub, "flywheel.v1.TrainingService") == health_pb2.HealthCheckResponse.SERVING
        gate.clear()
        await _wait_status(stub, health_pb2.HealthCheckResponse.NOT_SERVING)


async def test_health_follows_a_real_redis_ping(redis_url):
    client = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_timeout=0.2,
                                     socket_connect_timeout=0.2)
    readiness = Readiness([], interval_s=0.05)
    readiness.add_check("redis", client.ping)
    assert await readiness.evaluate() is False
    live = aioredis.Redis.from_url(redis_url, socket_timeout=1)
    readiness = Readiness([], interval_s=0.05)
    readiness.add_check("redis", live.ping)
    assert await readiness.evaluate() is True
    await live.aclose()
    await client.aclose()


async def test_domain_errors_map_to_status_and_unknown_errors_hide_internals(server_and_gate):
    server, _ = server_and_gate
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = training_pb2_grpc.TrainingServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await stub.GetTrainingRun(training_pb2.GetTrainingRunRequest(), timeout=2)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "run_id" in bad.value.details()

        with pytest.raises(grpc.aio.AioRpcError) as boom:
            await stub.GetTrainingRun(
                training_pb2.GetTrainingRunRequest(run_id="boom"), timeout=2,
                metadata=(("x-request-id", "req-42"),),
            )
        assert boom.value.code() == grpc.StatusCode.INTERNAL
        assert "secret" not in boom.value.details()
        assert "req-42" in boom.value.details()

        call = stub.GetTrainingRun(training_pb2.GetTrainingRunRequest(run_id="r1"), timeout=2,
                                   metadata=(("x-request-id", "req-7"),))
        reply = await call
        assert reply.run.run_id == "r1"
        assert ("x-request-id", "req-7") in tuple(await call.trailing_metadata())


async def test_bytes_that_are_no_request_are_an_invalid_argument_naming_the_message(
    server_and_gate,
):
    """grpc.aio answers a request it cannot decode UNKNOWN; the wrapper decodes instead."""
    server, _ = server_and_gate
    garbage = b"\x0a\x05ab"  # a field longer than what follows
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        raw = channel.unary_unary("/flywheel.v1.TrainingService/GetTrainingRun")
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await raw(garbage, timeout=2)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad.value.details() == \
            "the request is not a valid flywheel.v1.GetTrainingRunRequest encoding"
        reply = training_pb2.GetTrainingRunResponse.FromString(
            await raw(training_pb2.GetTrainingRunRequest(run_id="r2").SerializeToString(),
                      timeout=2))
        assert reply.run.run_id == "r2"


async def test_a_stream_message_that_is_no_request_is_an_invalid_argument():
    async def count(requests, context):
        return training_pb2.GetTrainingRunResponse(
            run=training_pb2.TrainingRun(run_id=str(len([r.run_id async for r in requests]))))

    def add(servicer, registrar) -> None:
        handler = grpc.stream_unary_rpc_method_handler(
            servicer, request_deserializer=training_pb2.GetTrainingRunRequest.FromString,
            response_serializer=training_pb2.GetTrainingRunResponse.SerializeToString)
        registrar.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("test.Counter", {"Count": handler}),))

    server = GrpcServer(ServiceSettings(grpc_port=0, shutdown_grace_s=0.5),
                        Readiness(["test.Counter"], interval_s=0.05))
    server.add_service(add, count, "test.Counter")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            call = channel.stream_unary("/test.Counter/Count")
            good = training_pb2.GetTrainingRunRequest(run_id="a").SerializeToString()
            reply = await call(iter([good, good]), timeout=2)
            assert training_pb2.GetTrainingRunResponse.FromString(reply).run.run_id == "2"
            with pytest.raises(grpc.aio.AioRpcError) as bad:
                await call(iter([good, b"\x0a\x05ab"]), timeout=2)
            assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "flywheel.v1.GetTrainingRunRequest" in bad.value.details()
    finally:
        await server.stop()


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
async def test_reflection_lists_the_services_under_both_versions(server_and_gate, version):
    """What grpcurl sends: the method path of its reflection version and the protocol's
    messages (identical field for field in v1 and v1alpha)."""
    from grpc_reflection.v1alpha import reflection_pb2

    server, _ = server_and_gate
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        info = channel.stream_stream(
            f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
        call = info(iter([
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(
                file_containing_symbol="flywheel.v1.TrainingService"),
        ]), timeout=10)
        replies = [reply async for reply in call]
    listed = {s.name for s in replies[0].list_services_response.service}
    assert {"flywheel.v1.TrainingService", "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection"} <= listed
    assert replies[1].file_descriptor_response.file_descriptor_proto
