"""OpenTelemetry traces: one trace per request, continued through every Kafka record.

The context travels as W3C `traceparent` (and `tracestate`) through OpenTelemetry's global
propagator: in gRPC metadata (`flywheel.common.grpc.interceptors` continues a caller's trace
in a server span) and in every Kafka record's headers (`standard_headers` writes the current
context; each consumer continues it with `continued` or `each_trace`).

Recording is off unless a service is told where spans go (`configure`): OTLP when
`OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set, JSON lines in a folder
(`FLYWHEEL_TRACE_DIR`, for tests and debugging), or the most recent spans kept in memory
(`FLYWHEEL_TRACE_MEMORY_SPANS`, for measuring what tracing costs). Off, `enabled` is False
and the hot paths skip every span; a caller's `traceparent` is still handed on unchanged to
the records its call produces (the API's no-op tracer carries the remote context through).

The standard OTEL_* variables (service name, sampler, span limits, exporter options) keep
their meaning: the SDK reads them itself.
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode

TRACER_NAME = "flywheel"

# True once `configure` installed a recording tracer provider; read on every hot-path call.
enabled = False
# The most links one span keeps (the provider's span limit).
max_links = 1000

_tracer = trace.get_tracer(TRACER_NAME)
_NO_SPAN = contextlib.nullcontext()

Carrier = Mapping[str, str]


def configure(service: str, *, otlp_endpoint: str = "", trace_dir: Path | None = None,
              memory_spans: int = 0, max_links_per_span: int = 0) -> bool:
    """Installs the tracer provider of this process when spans have somewhere to go; returns
    whether tracing is on. Called once, at start, by `flywheel.common.service`."""
    global enabled, _tracer, max_links
    if not (otlp_endpoint or trace_dir or memory_spans):
        return False
    max_links = max_links_per_span or max_links
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import SpanLimits, TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
    )

    limits = SpanLimits(max_links=max_links)
    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: f"flywheel-{service}"}), span_limits=limits)
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    if trace_dir is not None:
        trace_dir.mkdir(parents=True, exist_ok=True)
        # One file per process (no two writers share a file); each span written as it ends.
        out = open(trace_dir / f"{service}-{os.getpid()}.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(
            out=out, formatter=lambda span: span.to_json(indent=None) + "\n")))
    if memory_spans:
        provider.add_span_processor(BatchSpanProcessor(RecentSpans(memory_spans)))
    trace.set_tracer_provider(provider)
    _tracer = trace.get_tracer(TRACER_NAME)
    enabled = True
    return True


class RecentSpans:
    """A span exporter that keeps the last `size` spans in memory (a bounded in-memory
    exporter: everything tracing costs but the I/O)."""

    def __init__(self, size: int) -> None:
        self._spans: collections.deque = collections.deque(maxlen=size)
        self._lock = threading.Lock()
        self.exported = 0

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        with self._lock:
            self._spans.extend(spans)
            self.exported += len(spans)
        return SpanExportResult.SUCCESS

    def spans(self) -> list[Any]:
        with self._lock:
            return list(self._spans)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


# -- carrying the context ----------------------------------------------------------------------


def extract(carrier: Carrier) -> otel_context.Context:
    """The context a carrier (metadata or record headers, as str -> str) holds."""
    return propagate.extract(carrier)


def inject() -> dict[str, str]:
    """The current context as carrier entries (`traceparent`, `tracestate`); empty when there
    is none."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def span_context_of(carrier: Carrier) -> trace.SpanContext | None:
    """The remote span a carrier names (None: none, or not valid)."""
    found = trace.get_current_span(extract(carrier)).get_span_context()
    return found if found.is_valid else None


def links_to(carriers: Iterable[Carrier], limit: int) -> list[Link]:
    """Links to the distinct traces the carriers name, at most `limit`."""
    links: list[Link] = []
    seen: set[int] = set()
    for carrier in carriers:
        found = span_context_of(carrier) if carrier else None
        if found is None or found.trace_id in seen:
            continue
        seen.add(found.trace_id)
        links.append(Link(found))
        if len(links) >= limit:
            break
    return links


# -- spans ---------------------------------------------------------------------------------------


def span(name: str, attributes: Mapping[str, Any] | None = None,
         kind: SpanKind = SpanKind.INTERNAL) -> contextlib.AbstractContextManager:
    """A child span of the current context, made current; nothing at all when tracing is off."""
    if not enabled:
        return _NO_SPAN
    return _tracer.start_as_current_span(name, kind=kind, attributes=attributes)


@contextlib.contextmanager
def continued(carrier: Carrier | None, name: str, attributes: Mapping[str, Any] | None = None,
              links: Sequence[Link] = (), kind: SpanKind = SpanKind.CONSUMER) -> Iterator[None]:
    """Runs the block in the trace the carrier names (a record's headers): in a span of it
    when tracing is on; with its context current (so records produced inside carry it on)
    when off."""
    parent = extract(carrier) if carrier else None
    if enabled:
        with _tracer.start_as_current_span(name, context=parent, kind=kind,
                                           attributes=attributes, links=links):
            yield
        return
    if parent is None:
        yield
        return
    token = otel_context.attach(parent)
    try:
        yield
    finally:
        otel_context.detach(token)


@contextlib.contextmanager
def each_trace(carriers: Iterable[Carrier], name: str,
               attributes: Mapping[str, Any] | None = None) -> Iterator[None]:
    """For a batch handled at once: the block in one span per distinct trace among the
    records' headers (records of one request share one), each ended with the block's outcome.
    Nothing when tracing is off."""
    if not enabled:
        yield
        return
    spans: dict[str, Span] = {}
    for carrier in carriers:
        parent = carrier.get("traceparent", "")
        if parent and parent not in spans:
            spans[parent] = _tracer.start_span(name, context=extract(carrier),
                                               kind=SpanKind.CONSUMER, attributes=attributes)
    failure = ""
    try:
        yield
    except BaseException as error:
        failure = f"{type(error).__name__}: {error}"[:200]
        raise
    finally:
        for one in spans.values():
            if failure:
                one.set_status(Status(StatusCode.ERROR, failure))
            one.end()


@contextlib.contextmanager
def root(name: str, attributes: Mapping[str, Any] | None = None) -> Iterator[Span | None]:
    """The block in a new trace of its own (whatever is current), its span current; None and
    nothing else when tracing is off."""
    if not enabled:
        yield None
        return
    with _tracer.start_as_current_span(name, context=otel_context.Context(),
                                       attributes=attributes) as started:
        yield started


def link(target: Span | None, traceparents: Iterable[str]) -> None:
    """Links `target` to the distinct traces named (at most `max_links`)."""
    if target is None:
        return
    for found in links_to(({"traceparent": t} for t in traceparents if t), max_links):
        target.add_link(found.context)


def annotate(target: Span | None, attributes: Mapping[str, Any]) -> None:
    if target is not None:
        target.set_attributes(attributes)


# -- gRPC server side (used by the interceptor) -------------------------------------------------


def enter_server_call(method: str, carrier: Carrier | None) -> tuple[Any, Span | None] | None:
    """The caller's trace continued for one call: a server span (on) or the caller's context
    (off, when it sent one). Returns what `leave_server_call` needs; None when nothing was
    entered."""
    if enabled:
        parent = extract(carrier) if carrier else None
        server_span = _tracer.start_span(method, context=parent, kind=SpanKind.SERVER,
                                         attributes={"rpc.system": "grpc"})
        return otel_context.attach(trace.set_span_in_context(server_span, parent)), server_span
    if carrier:
        return otel_context.attach(extract(carrier)), None
    return None


def leave_server_call(entered: tuple[Any, Span | None], failure: str = "") -> None:
    token, server_span = entered
    if server_span is not None:
        if failure:
            server_span.set_status(Status(StatusCode.ERROR, failure))
        server_span.end()
    otel_context.detach(token)


def current_trace_id() -> str:
    """The current trace id as 32 hex digits ('' without one)."""
    found = trace.get_current_span().get_span_context()
    return f"{found.trace_id:032x}" if found.is_valid else ""
