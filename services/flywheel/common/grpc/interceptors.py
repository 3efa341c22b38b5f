"""Server interceptors: request id in, domain errors mapped to gRPC status codes out.

This is the one mapping from `FlywheelError.code` to a gRPC status. Anything else raised by a
servicer is logged with its request id and answered INTERNAL without internals.
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

log = logging.getLogger("flywheel.grpc")

REQUEST_ID_KEY = "x-request-id"
TRACEPARENT_KEY = "traceparent"


def status_of(error: FlywheelError) -> grpc.StatusCode:
    return grpc.StatusCode[error.code]


def _enter_context(context: grpc.aio.ServicerContext) -> tuple[str, Any, Any]:
    metadata = dict(context.invocation_metadata() or ())
    request_id = str(metadata.get(REQUEST_ID_KEY) or new_request_id())[:128]
    traceparent = str(metadata.get(TRACEPARENT_KEY) or "")
    token_r = request_id_var.set(request_id)
    token_t = traceparent_var.set(traceparent if valid_traceparent(traceparent) else "")
    context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
    return request_id, token_r, token_t


async def _fail(context: grpc.aio.ServicerContext, error: BaseException, method: str) -> None:
    if isinstance(error, FlywheelError):
        await context.abort(status_of(error), error.message)
    log.error("unhandled error in %s", method, exc_info=error)
    await context.abort(
        grpc.StatusCode.INTERNAL, f"internal error; request id {request_id_var.get()}"
    )


def _wrap_unary_response(behavior: Callable, method: str) -> Callable:
    async def handler(request_or_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        _, token_r, token_t = _enter_context(context)
        try:
            return await behavior(request_or_iterator, context)
        except AbortError:
            raise
        except Exception as error:  # noqa: BLE001 - the one place that maps every error
            await _fail(context, error, method)
        finally:
            request_id_var.reset(token_r)
            traceparent_var.reset(token_t)

    return handler


def _wrap_stream_response(behavior: Callable, method: str) -> Callable:
    async def handler(request_or_iterator: Any, context: grpc.aio.ServicerContext) -> AsyncIterator:
        _, token_r, token_t = _enter_context(context)
        try:
            async for item in behavior(request_or_iterator, context):
                yield item
        except AbortError:
            raise
        except Exception as error:  # noqa: BLE001
            await _fail(context, error, method)
        finally:
            request_id_var.reset(token_r)
            traceparent_var.reset(token_t)

    return handler


class ContextAndErrorsInterceptor(grpc.aio.ServerInterceptor):
    """Sets the request id / traceparent context and maps errors for every method."""

    async def intercept_service(
        self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        if method.startswith("/grpc.health.v1.") or method.startswith("/grpc.reflection."):
            return handler
        kwargs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary_response(handler.unary_unary, method), **kwargs
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                _wrap_unary_response(handler.stream_unary, method), **kwargs
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream_response(handler.unary_stream, method), **kwargs
            )
        return grpc.stream_stream_rpc_method_handler(
            _wrap_stream_response(handler.stream_stream, method), **kwargs
        )
