"""Per-request context carried through contextvars: the request id, the trace parent and the
caller's deadline."""

from __future__ import annotations

import contextvars
import itertools
import os
import re
import time

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
traceparent_var: contextvars.ContextVar[str] = contextvars.ContextVar("traceparent", default="")
# When the caller's deadline passes, on the time.monotonic() clock; None: the caller set none.
deadline_var: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "deadline", default=None
)

_TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


# Request ids minted here: 16 random hex digits per process, then a counter (32 hex digits in
# all, like a uuid4 hex). Unique without a system call per request.
_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count(int.from_bytes(os.urandom(4), "big"))


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER) & 0xFFFFFFFFFFFFFFFF:016x}"


def new_traceparent() -> str:
    return f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01"


def valid_traceparent(value: str) -> bool:
    return bool(_TRACEPARENT.match(value))


def current_request_id() -> str:
    return request_id_var.get()


def current_traceparent() -> str:
    """The caller's traceparent, or a new one so every record can be traced from here on."""
    value = traceparent_var.get()
    return value if value else new_traceparent()


def time_left() -> float | None:
    """Seconds until the caller's deadline (negative once it passed); None without one."""
    deadline = deadline_var.get()
    return None if deadline is None else deadline - time.monotonic()
