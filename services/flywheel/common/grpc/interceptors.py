"""Every service method's common behaviour: admission, request id and deadline in, domain
errors mapped to status codes out.

The caller's deadline goes into `flywheel.common.context.deadline_var`, so that the domain
code bounds its waits on dependencies by it (`flywheel.common.dependency`).

This is the one mapping from `FlywheelError.code` to a gRPC status. Anything else raised by a
servicer is logged with its request id and answered INTERNAL without internals.

The behaviour is applied once, when a service registers, not per call: `GrpcServer.add_service`
hands the service's `add_*_to_server` function a `WrappingRegistrar` in place of the grpc.aio
server, and every method handler registered through it (`add_generic_rpc_handlers` or
`add_registered_method_handlers`, with or without request deserializer and response
serializer) is replaced by one whose behaviour runs inside `_wrap_unary_response` or
`_wrap_stream_response`. A call then costs one coroutine frame around the servicer's method and
no grpc.aio server interceptor (whose async continuation chain runs for every call, before
the handler is even found). Health and reflection are registered on the server directly and
are never wrapped: probes are never counted nor refused. The wrapper also runs the request
deserializer, so that bytes that are no valid request get INVALID_ARGUMENT naming the message
type (grpc.aio itself answers those UNKNOWN).

The caller's trace (`traceparent`, `tracestate`) is continued in a server span named after the
method when tracing is on, and only carried on (no span) when it is off; see
`flywheel.common.tracing`.

The per-call path is kept lean: admission is a counter check, the metadata is scanned once
without building a dict, and a missing request id is minted without a system call.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc.aio import AbortError

from flywheel.common import tracing
from flywheel.common.context import deadline_var, new_request_id, request_id_var
from flywheel.common.errors import FlywheelError, InvalidArgument
from flywheel.common.grpc.admission import Admission
from flywheel.common.grpc.auth import Guard, role_of

log = logging.getLogger("flywheel.grpc")

REQUEST_ID_KEY = "x-request-id"
TRACEPARENT_KEY = "traceparent"
TRACESTATE_KEY = "tracestate"

# Methods never wrapped (never counted nor refused), even when registered through a registrar.
UNWRAPPED_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


def status_of(error: FlywheelError) -> grpc.StatusCode:
    return grpc.StatusCode[error.code]


def _enter_context(context: grpc.aio.ServicerContext, method: str) -> tuple[Any, Any, Any]:
    """The call's request id, trace and deadline into the context (see
    `flywheel.common.context` and `flywheel.common.tracing`); their tokens, for
    `_leave_context`."""
    request_id = ""
    trace_carrier: dict[str, str] | None = None
    for key, value in context.invocation_metadata() or ():
        # A repeated key: the last one wins (as it did with a dict of the pairs).
        if key == REQUEST_ID_KEY:
            request_id = str(value)[:128]
        elif key in (TRACEPARENT_KEY, TRACESTATE_KEY):
            if trace_carrier is None:
                trace_carrier = {}
            trace_carrier[key] = str(value)
    if not request_id:
        request_id = new_request_id()
    remaining = context.time_remaining()
    tokens = (
        request_id_var.set(request_id),
        deadline_var.set(None if remaining is None else time.monotonic() + remaining),
        tracing.enter_server_call(method, trace_carrier)
        if tracing.enabled or trace_carrier else None,
    )
    context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
    return tokens


def _leave_context(tokens: tuple[Any, Any, Any], context: grpc.aio.ServicerContext) -> None:
    token_r, token_d, trace_entered = tokens
    request_id_var.reset(token_r)
    deadline_var.reset(token_d)
    if trace_entered is not None:
        code = context.code() if tracing.enabled else None
        tracing.leave_server_call(trace_entered, "" if code in (None, grpc.StatusCode.OK)
                                  else getattr(code, "name", str(code)))


async def _fail(context: grpc.aio.ServicerContext, error: BaseException, method: str) -> None:
    if isinstance(error, FlywheelError):
        await context.abort(status_of(error), error.message)
    log.error("unhandled error in %s", method, exc_info=error)
    await context.abort(
        grpc.StatusCode.INTERNAL, f"internal error; request id {request_id_var.get()}"
    )


Decode = Callable[[Any], Any]


def _decoder(deserializer: Callable[[bytes], Any] | None, streaming: bool) -> Decode | None:
    """The request deserializer (of one request, or applied to each of a stream's), run by
    the wrapper instead of by grpc.aio: bytes it cannot read are then INVALID_ARGUMENT, where
    grpc.aio would answer UNKNOWN with the exception's text."""
    if deserializer is None:
        return None
    message_type = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    refusal = (f"the request is not a valid {message_type.full_name} encoding"
               if message_type is not None else "the request is not a valid encoding")

    def decode_one(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError:
            raise InvalidArgument(refusal, field="request") from None

    if not streaming:
        return decode_one

    async def decode_each(messages: AsyncIterator[bytes]) -> AsyncIterator[Any]:
        async for data in messages:
            yield decode_one(data)

    return decode_each


Check = Callable[[grpc.aio.ServicerContext], "tuple[grpc.StatusCode, str] | None"]


def _check_of(guard: Guard | None, method: str) -> Check | None:
    """The per-call token check of `method` (None without authentication): its role is
    found once, here."""
    if guard is None:
        return None
    role = role_of(method)
    return lambda context: guard.check(method, role, context.invocation_metadata())


def _wrap_unary_response(
    behavior: Callable, method: str, admission: Admission, decode: Decode | None = None,
    check: Check | None = None,
) -> Callable:
    """A coroutine method (unary or stream request, one response)."""

    async def handler(request_or_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        if check is not None and (denial := check(context)) is not None:
            await context.abort(*denial)
        if not admission.try_enter():
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, admission.refusal)
        tokens = _enter_context(context, method)
        try:
            if decode is not None:
                request_or_iterator = decode(request_or_iterator)
            return await behavior(request_or_iterator, context)
        except AbortError:
            raise
        except Exception as error:  # noqa: BLE001 - the one place that maps every error
            await _fail(context, error, method)
        finally:
            admission.leave()
            _leave_context(tokens, context)

    return handler


def _wrap_stream_response(
    behavior: Callable, method: str, admission: Admission, decode: Decode | None = None,
    check: Check | None = None,
) -> Callable:
    """An async generator method (responses yielded); a coroutine method that writes its
    responses with `context.write` keeps that form."""
    if inspect.iscoroutinefunction(behavior):
        return _wrap_unary_response(behavior, method, admission, decode, check)

    async def handler(request_or_iterator: Any, context: grpc.aio.ServicerContext) -> AsyncIterator:
        if check is not None and (denial := check(context)) is not None:
            await context.abort(*denial)
        if not admission.try_enter():
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, admission.refusal)
        tokens = _enter_context(context, method)
        try:
            if decode is not None:
                request_or_iterator = decode(request_or_iterator)
            async for item in behavior(request_or_iterator, context):
                yield item
        except AbortError:
            raise
        except Exception as error:  # noqa: BLE001
            await _fail(context, error, method)
        finally:
            admission.leave()
            _leave_context(tokens, context)

    return handler


def wrap_method_handler(
    handler: grpc.RpcMethodHandler, method: str, admission: Admission, guard: Guard | None = None
) -> grpc.RpcMethodHandler:
    """`handler` (of the full method name `method`) with the token check (when `guard`),
    admission, the request context, the error mapping and its request deserializer (None
    included) run inside; its response serializer as it is. Health and reflection as is."""
    if method.startswith(UNWRAPPED_PREFIXES):
        return handler
    check = _check_of(guard, method)
    # The requests reach the wrapper as bytes; it decodes them (see `_decoder`).
    kwargs = {"request_deserializer": None, "response_serializer": handler.response_serializer}
    deserializer = handler.request_deserializer
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(_wrap_unary_response(
            handler.unary_unary, method, admission, _decoder(deserializer, False), check), **kwargs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(_wrap_unary_response(
            handler.stream_unary, method, admission, _decoder(deserializer, True), check), **kwargs)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(_wrap_stream_response(
            handler.unary_stream, method, admission, _decoder(deserializer, False), check), **kwargs)
    return grpc.stream_stream_rpc_method_handler(_wrap_stream_response(
        handler.stream_stream, method, admission, _decoder(deserializer, True), check), **kwargs)


class _Wrapped:
    """Full method name -> (the handler as registered, its wrapped form): a handler is wrapped
    once, whichever registration path (or call) meets it first."""

    def __init__(self, admission: Admission, guard: Guard | None = None) -> None:
        self._admission = admission
        self._guard = guard
        self._by_method: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def get(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        cached = self._by_method.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = wrap_method_handler(handler, method, self._admission, self._guard)
        self._by_method[method] = (handler, wrapped)
        return wrapped


class _WrappingGenericHandler(grpc.GenericRpcHandler):
    """A registered generic handler whose method handlers come back wrapped (each wrapped
    once; a generic handler that answers a method with another handler later gets that one
    wrapped in turn)."""

    def __init__(self, inner: grpc.GenericRpcHandler, wrapped: _Wrapped) -> None:
        self._inner = inner
        self._wrapped = wrapped

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = self._inner.service(handler_call_details)
        if handler is None:
            return None
        return self._wrapped.get(handler_call_details.method, handler)


class WrappingRegistrar:
    """What a service's `add_*_to_server(servicer, server)` gets as `server`: the method
    handlers it registers reach the real server wrapped (`wrap_method_handler`); anything else
    it asks of the server is passed through."""

    def __init__(
        self, server: grpc.aio.Server, admission: Admission, guard: Guard | None = None
    ) -> None:
        self._server = server
        self._wrapped = _Wrapped(admission, guard)

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(
            tuple(_WrappingGenericHandler(h, self._wrapped) for h in generic_rpc_handlers)
        )

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: Mapping[str, grpc.RpcMethodHandler]
    ) -> None:
        # grpc.aio (1.81) ignores these and resolves through the generic handlers; wrapping
        # here too keeps both paths identical (and warms the generic path's cache).
        self._server.add_registered_method_handlers(service_name, {
            name: self._wrapped.get(f"/{service_name}/{name}", handler)
            for name, handler in method_handlers.items()
        })

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)
