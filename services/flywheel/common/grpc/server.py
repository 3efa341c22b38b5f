"""The gRPC server builder every service uses: health, reflection, the common per-method
behaviour (token check, admission, request context, error mapping; applied when a service
registers, see interceptors.py), TLS or mutual TLS from the security settings (tls.py; health
and reflection on the same port, hence the same transport), limits, graceful shutdown
(NOT_SERVING, drain in-flight calls, stop within the grace period)."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from flywheel.common.grpc.admission import Admission
from flywheel.common.grpc.auth import guard_for
from flywheel.common.grpc.interceptors import WrappingRegistrar
from flywheel.common.grpc.readiness import Readiness
from flywheel.common.grpc.reflection import enable_reflection
from flywheel.common.grpc.tls import server_credentials
from flywheel.common.settings import GrpcSecuritySettings, ServiceSettings

log = logging.getLogger("flywheel.server")


class GrpcServer:
    """Owns one grpc.aio server. Register servicers, then `start`, then `stop`."""

    def __init__(
        self, settings: ServiceSettings, readiness: Readiness,
        security: GrpcSecuritySettings | None = None,
    ) -> None:
        self._settings = settings
        self._security = security or GrpcSecuritySettings.model_construct()
        self.readiness = readiness
        limit = settings.max_message_bytes
        # The concurrency limit is ours, not grpc.aio's maximum_concurrent_rpcs (which refuses
        # the first call after a burst even when idle; see admission.py).
        self.admission = Admission(settings.max_concurrent_rpcs)
        # No server interceptor: the services' method handlers are wrapped as they register
        # (add_service), which costs nothing per call beyond the wrapper itself.
        self._server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.so_reuseport", 0),
            ],
        )
        self._service_names: list[str] = [
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        ]
        health_pb2_grpc.add_HealthServicer_to_server(readiness.health, self._server)
        self._registrar = WrappingRegistrar(
            self._server, self.admission, guard_for(self._security))
        self._readiness_task: asyncio.Task | None = None
        self.port = 0

    def add_service(
        self, add_to_server: Callable[[Any, grpc.aio.Server], None], servicer: Any, full_name: str
    ) -> None:
        """Registers a service: `add_to_server(servicer, server)` (a generated
        add_*_to_server, or one that calls `add_generic_rpc_handlers` and
        `add_registered_method_handlers` itself) gets a registrar that wraps each method
        handler with admission, the request context and the error mapping."""
        add_to_server(servicer, self._registrar)
        self._service_names.append(full_name)

    async def start(self) -> int:
        enable_reflection(self._service_names, self._server)
        address = f"{self._settings.grpc_host}:{self._settings.grpc_port}"
        credentials = server_credentials(self._security)
        if credentials is None:
            self.port = self._server.add_insecure_port(address)
        else:
            self.port = self._server.add_secure_port(address, credentials)
        # The health servicer answers SERVING for "" until told otherwise: set the real
        # status before the first caller can ask.
        await self.readiness.evaluate()
        await self._server.start()
        self._readiness_task = asyncio.create_task(self.readiness.run(), name="readiness")
        log.info("gRPC listening", extra={
            "address": f"{self._settings.grpc_host}:{self.port}",
            "tls": "mutual" if self._security.mutual_tls
            else "server" if self._security.server_tls else "off",
            "tokens": self._security.auth_enabled})
        return self.port

    async def stop(self) -> None:
        await self.readiness.drain()
        if self._readiness_task:
            self._readiness_task.cancel()
        await self._server.stop(self._settings.shutdown_grace_s)

    async def wait_for_termination(self) -> None:
        await self._server.wait_for_termination()


async def run_until_signalled(
    start: Callable[[], Awaitable[None]], stop: Callable[[], Awaitable[None]]
) -> None:
    """Runs a service's composition root: start, wait for SIGTERM/SIGINT, stop gracefully."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await start()
    await stopping.wait()
    log.info("signal received; draining")
    await stop()
