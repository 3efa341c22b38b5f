"""Decoded records and the error policy a consumer is given."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from google.protobuf.message import Message

M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class Record(Generic[M]):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: M
    headers: dict[str, str]
    timestamp_ms: int


class ErrorAction(enum.Enum):
    # Keep the records and try again after a back-off; the group does not advance.
    RETRY = "retry"
    # Send the failing records to `<topic>.dlq` and go on.
    DEAD_LETTER = "dead_letter"
    # Stop the consumer; health turns NOT_SERVING.
    STOP = "stop"


# Decides what happens when a handler raised: (error, attempt number starting at 1) -> action.
ErrorPolicy = Callable[[Exception, int], ErrorAction]


def always_retry(error: Exception, attempt: int) -> ErrorAction:
    """The default: a failing handler never advances the group (nothing is skipped)."""
    return ErrorAction.RETRY


def backoff_s(attempt: int) -> float:
    return min(0.1 * 2 ** (attempt - 1), 5.0)
