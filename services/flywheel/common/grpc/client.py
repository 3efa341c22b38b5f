"""Client-side helpers: channels with our message limits, and waiting for SERVING."""

from __future__ import annotations

import asyncio
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024


def channel_options(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]


def aio_channel(target: str, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(target, options=channel_options(max_message_bytes))


def health_status(target: str, service: str = "", timeout_s: float = 1.0) -> str:
    """The health status name of one server ('SERVING', 'NOT_SERVING', 'UNREACHABLE')."""
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError:
            return "UNREACHABLE"
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def wait_for_serving(target: str, timeout_s: float, service: str = "") -> None:
    """Blocks until the server answers SERVING; raises TimeoutError with the last status."""
    deadline = time.monotonic() + timeout_s
    status = "UNREACHABLE"
    while time.monotonic() < deadline:
        status = health_status(target, service, timeout_s=min(1.0, timeout_s))
        if status == "SERVING":
            return
        time.sleep(0.1)
    raise TimeoutError(f"{target} not SERVING after {timeout_s:.0f}s (last status {status})")


async def wait_for_serving_async(target: str, timeout_s: float, service: str = "") -> None:
    await asyncio.to_thread(wait_for_serving, target, timeout_s, service)
