"""The one error hierarchy of the project.

Domain code raises these; it never imports grpc. The gRPC layer maps `code` to a status in
exactly one place (`flywheel.common.grpc.interceptors`). The message is for the caller: it
names the field or the thing that was wrong, never internals.
"""

from __future__ import annotations


class FlywheelError(Exception):
    """Base class. `code` is the gRPC status name the caller sees."""

    code = "INTERNAL"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidArgument(FlywheelError):
    code = "INVALID_ARGUMENT"


class NotFound(FlywheelError):
    code = "NOT_FOUND"


class AlreadyExists(FlywheelError):
    code = "ALREADY_EXISTS"


class FailedPrecondition(FlywheelError):
    code = "FAILED_PRECONDITION"


class ResourceExhausted(FlywheelError):
    code = "RESOURCE_EXHAUSTED"


class Unavailable(FlywheelError):
    code = "UNAVAILABLE"


class DeadlineExceeded(FlywheelError):
    code = "DEADLINE_EXCEEDED"


class Unauthenticated(FlywheelError):
    code = "UNAUTHENTICATED"


class PermissionDenied(FlywheelError):
    code = "PERMISSION_DENIED"


class DecodeError(FlywheelError):
    """A Kafka record whose bytes are not the topic's message type."""

    code = "INVALID_ARGUMENT"


class ArtifactRejected(FlywheelError):
    """A model artifact failed verification (hash, ONNX check, unsafe path, size)."""

    code = "FAILED_PRECONDITION"
