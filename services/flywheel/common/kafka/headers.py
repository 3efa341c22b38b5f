"""Record headers: message type, request id, the trace context (W3C `traceparent`, and
`tracestate` when there is one, written by OpenTelemetry's propagator), and the DLQ's error
headers."""

from __future__ import annotations

from flywheel.common import tracing
from flywheel.common.context import current_request_id

MESSAGE_TYPE = "message-type"
REQUEST_ID = "request-id"
TRACEPARENT = "traceparent"

DLQ_ERROR = "dlq.error"
DLQ_ERROR_TYPE = "dlq.error.type"
DLQ_SOURCE_TOPIC = "dlq.source.topic"
DLQ_SOURCE_PARTITION = "dlq.source.partition"
DLQ_SOURCE_OFFSET = "dlq.source.offset"

Headers = list[tuple[str, bytes]]


def standard_headers(type_name: str, request_id: str | None = None) -> Headers:
    """Message type, request id and the current trace context (none when there is no trace)."""
    headers = [
        (MESSAGE_TYPE, type_name.encode()),
        (REQUEST_ID, (request_id or current_request_id()).encode()),
    ]
    headers.extend((key, value.encode()) for key, value in tracing.inject().items())
    return headers


def as_dict(headers: list[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """Header list -> dict of str (last value wins; undecodable bytes are replaced)."""
    out: dict[str, str] = {}
    for key, value in headers or ():
        out[key] = value.decode("utf-8", "replace") if value is not None else ""
    return out
