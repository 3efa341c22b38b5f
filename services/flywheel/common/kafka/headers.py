"""Record headers: message type, request id, W3C traceparent, and the DLQ's error headers."""

from __future__ import annotations

from flywheel.common.context import current_request_id, current_traceparent

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
    return [
        (MESSAGE_TYPE, type_name.encode()),
        (REQUEST_ID, (request_id or current_request_id()).encode()),
        (TRACEPARENT, current_traceparent().encode()),
    ]


def as_dict(headers: list[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """Header list -> dict of str (last value wins; undecodable bytes are replaced)."""
    out: dict[str, str] = {}
    for key, value in headers or ():
        out[key] = value.decode("utf-8", "replace") if value is not None else ""
    return out
