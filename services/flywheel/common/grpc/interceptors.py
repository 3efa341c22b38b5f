"""The server interceptor: admission, request id in, domain errors mapped to status codes out.

This is the one mapping from `FlywheelError.code` to a gRPC status. Anything else raised by a
servicer is logged with its request id and answered INTERNAL without internals.

Every RPC passes here, and only here (one wrapper per call, not a chain), so the path is kept
lean: admission is a counter check, a method's wrapped handler is built once and
reused while the server hands out the same inner handler, the metadata is scanned once without
building a dict, and a missing request id is minted without a system call.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from grpc.aio import AbortError

from flywheel.common.context import (
    new_request_id,
    request_id_var,
    traceparent_var,
    valid_traceparent,
)
from flywheel.common.errors import FlywheelError
from flywheel.common.grpc.admission import Admission

log = logging.getLogger("flywheel.grpc")

REQUEST_ID_KEY = "x-request-id"
TRACEPARENT_KEY = "traceparent"


def status_of(error: FlywheelError) -> grpc.StatusCode:
    return grpc.StatusCode[error.code]


def _enter_context(context: grpc.aio.ServicerContext) -> tuple[str, Any, Any]:
    request_id = traceparent = ""
    for key, value in context.invocation_metadata() or ():
        # A repeated key: the last one wins (as it did with a dict of the pairs).
        if key == REQUEST_ID_KEY:
            request_id = str(value)[:128]
        elif key == TRACEPARENT_KEY:
            traceparent = str(value)
    if not request_id:
        request_id = new_request_id()
    if traceparent and not valid_traceparent(traceparent):
        traceparent = ""
    token_r = request_id_var.set(request_id)
    token_t = traceparent_var.set(traceparent)
    context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
    return request_id, token_r, token_t


async def _fail(context: grpc.aio.ServicerContext, error: BaseException, method: str) -> None:
    if isinstance(error, FlywheelError):
        await context.abort(status_of(error), error.message)
    log.error("unhandled error in %s", method, exc_info=error)
    await context.abort(
        grpc.StatusCode.INTERNAL, f"internal error; request id {request_id_var.get()}"
    )


def _wrap_unary_response(behavior: Callable, method: str, admission: Admission) -> Callable:
    async def handler(request_or_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        if not admission.try_enter():
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, admission.refusal)
        _, token_r, token_t = _enter_context(context)
        try:
            return await behavior(request_or_iterator, context)
        except AbortError:
            raise
        except Exception as error:  # noqa: BLE001 - the one place that maps every error
            await _fail(context, error, method)
        finally:
            admission.leave()
            request_id_var.reset(token_r)
            traceparent_var.reset(token_t)

    return handler


def _wrap_stream_response(behavior: Callable, method: str, admission: Admission) -> Callable:
    async def handler(request_or_iterator: Any, context: grpc.aio.ServicerContext) -> AsyncIterator:
        if not admission.try_enter():
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, admission.refusal)
        _, token_r, token_t = _enter_context(context)
        try:
            async for item in behavior(request_or_iterator, context):
                yield item
        except AbortError:
            raise
        except Exception as error:  # noqa: BLE001
            await _fail(context, error, method)
        finally:
            admission.leave()
            request_id_var.reset(token_r)
            traceparent_var.reset(token_t)

    return handler


class ContextAndErrorsInterceptor(grpc.aio.ServerInterceptor):
    """Admits, sets the request id / traceparent context and maps errors for every method."""

    def __init__(self, admission: Admission) -> None:
        self.admission = admission
        # method -> (the inner handler, its wrapped handler): wrapping happens once per method.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = _wrap(handler, method, self.admission)
        self._wrapped[method] = (handler, wrapped)
        return wrapped


def _wrap(
    handler: grpc.RpcMethodHandler, method: str, admission: Admission
) -> grpc.RpcMethodHandler:
    """`handler` with the request context set and errors mapped (health and reflection as is)."""
    if method.startswith(("/grpc.health.v1.", "/grpc.reflection.")):
        return handler
    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            _wrap_unary_response(handler.unary_unary, method, admission), **kwargs
        )
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            _wrap_unary_response(handler.stream_unary, method, admission), **kwargs
        )
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            _wrap_stream_response(handler.unary_stream, method, admission), **kwargs
        )
    return grpc.stream_stream_rpc_method_handler(
        _wrap_stream_response(handler.stream_stream, method, admission), **kwargs
    )
