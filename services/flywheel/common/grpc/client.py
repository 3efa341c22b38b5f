"""Client-side helpers: channels with our message limits and the transport of the security
settings (TLS, mutual TLS, a bearer token on every call), and waiting for SERVING.

Every client of the mesh (a service calling another, the CLI, the demo, replay, the benches)
makes its channels here, so that one `GrpcSecuritySettings` decides how all of them dial.
"""

from __future__ import annotations

import asyncio
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from flywheel.common.grpc.tls import channel_credentials, channel_name_options
from flywheel.common.settings import GrpcSecuritySettings

DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024


def channel_options(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]


def _credentials(security: GrpcSecuritySettings | None
                 ) -> tuple[grpc.ChannelCredentials | None, list[tuple[str, str]]]:
    """The channel credentials (None: plain text) with the bearer token attached to every
    call, and the options naming the server; a token needs TLS (gRPC sends call credentials
    over secure channels only)."""
    if security is None:
        return None, []
    credentials = channel_credentials(security)
    token = security.bearer_token()
    if token:
        if credentials is None:
            raise ValueError("a bearer token is only sent over TLS: set FLYWHEEL_GRPC_TLS_CA")
        credentials = grpc.composite_channel_credentials(
            credentials, grpc.access_token_call_credentials(token))
    return credentials, channel_name_options(security)


def aio_channel(
    target: str, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    security: GrpcSecuritySettings | None = None,
) -> grpc.aio.Channel:
    credentials, names = _credentials(security)
    options = channel_options(max_message_bytes) + names
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=options)
    return grpc.aio.secure_channel(target, credentials, options=options)


def sync_channel(
    target: str, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    security: GrpcSecuritySettings | None = None,
) -> grpc.Channel:
    credentials, names = _credentials(security)
    options = channel_options(max_message_bytes) + names
    if credentials is None:
        return grpc.insecure_channel(target, options=options)
    return grpc.secure_channel(target, credentials, options=options)


def health_status(
    target: str, service: str = "", timeout_s: float = 1.0,
    security: GrpcSecuritySettings | None = None,
) -> str:
    """The health status name of one server ('SERVING', 'NOT_SERVING', 'UNREACHABLE').
    Health needs no token, but it travels over the server's transport (TLS, mutual TLS)."""
    with sync_channel(target, security=security) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError:
            return "UNREACHABLE"
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def wait_for_serving(
    target: str, timeout_s: float, service: str = "",
    security: GrpcSecuritySettings | None = None,
) -> None:
    """Blocks until the server answers SERVING; raises TimeoutError with the last status."""
    deadline = time.monotonic() + timeout_s
    status = "UNREACHABLE"
    while time.monotonic() < deadline:
        status = health_status(target, service, timeout_s=min(1.0, timeout_s),
                               security=security)
        if status == "SERVING":
            return
        time.sleep(0.1)
    raise TimeoutError(f"{target} not SERVING after {timeout_s:.0f}s (last status {status})")


async def wait_for_serving_async(
    target: str, timeout_s: float, service: str = "",
    security: GrpcSecuritySettings | None = None,
) -> None:
    await asyncio.to_thread(wait_for_serving, target, timeout_s, service, security)
