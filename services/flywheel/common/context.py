"""Per-request context carried through contextvars: the request id and the caller's deadline
(the trace context is OpenTelemetry's own; see `flywheel.common.tracing`)."""

from __future__ import annotations

import contextvars
import itertools
import os
import time

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
# When the caller's deadline passes, on the time.monotonic() clock; None: the caller set none.
deadline_var: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "deadline", default=None
)

# Request ids minted here: 16 random hex digits per process, then a counter (32 hex digits in
# all, like a uuid4 hex). Unique without a system call per request.
_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count(int.from_bytes(os.urandom(4), "big"))


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER) & 0xFFFFFFFFFFFFFFFF:016x}"


def current_request_id() -> str:
    return request_id_var.get()


def time_left() -> float | None:
    """Seconds until the caller's deadline (negative once it passed); None without one."""
    deadline = deadline_var.get()
    return None if deadline is None else deadline - time.monotonic()
