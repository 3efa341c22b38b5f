"""Topics are objects: a name, the protobuf type of their payload, and their configuration.

Every topic of the mesh is declared here, once, with its partitions and retention.
Predictions and feedback share a partition count so that the join is co-partitioned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

from google.protobuf.message import DecodeError as ProtobufDecodeError
from google.protobuf.message import Message

from flywheel.common.errors import DecodeError
from flywheel.v1 import events_pb2

M = TypeVar("M", bound=Message)

DAY_MS = 24 * 3600 * 1000
JOIN_PARTITIONS = 6


@dataclass(frozen=True)
class Topic(Generic[M]):
    name: str
    message_type: type[M]
    partitions: int = 3
    config: dict[str, str] = field(default_factory=dict)

    @property
    def type_name(self) -> str:
        return self.message_type.DESCRIPTOR.full_name

    @property
    def dlq(self) -> Topic[M]:
        """Dead letters keep the source's bytes; the payload type is the source's."""
        return Topic(
            f"{self.name}.dlq",
            self.message_type,
            partitions=1,
            config={"retention.ms": str(14 * DAY_MS)},
        )

    def encode(self, message: M) -> bytes:
        if not isinstance(message, self.message_type):
            raise TypeError(f"{self.name} carries {self.type_name}, not {type(message).__name__}")
        return message.SerializeToString()

    def decode(self, payload: bytes | None, type_header: str | None = None) -> M:
        if payload is None:
            raise DecodeError(f"{self.name}: empty record (tombstone)")
        if type_header and type_header != self.type_name:
            raise DecodeError(f"{self.name}: header says {type_header}, expected {self.type_name}")
        message = self.message_type()
        try:
            message.ParseFromString(payload)
        except ProtobufDecodeError as error:
            raise DecodeError(f"{self.name}: not a {self.type_name}: {error}") from None
        return message


@dataclass(frozen=True)
class Topics:
    """The mesh's topics under one namespace (empty in production; one per test)."""

    namespace: str = ""

    def _name(self, base: str) -> str:
        return f"{self.namespace}.{base}" if self.namespace else base

    @property
    def events(self) -> Topic[events_pb2.Event]:
        return Topic(
            self._name("flywheel.events.v1"),
            events_pb2.Event,
            partitions=3,
            config={"retention.ms": str(7 * DAY_MS)},
        )

    @property
    def predictions(self) -> Topic[events_pb2.PredictionLogged]:
        return Topic(
            self._name("flywheel.predictions.v1"),
            events_pb2.PredictionLogged,
            partitions=JOIN_PARTITIONS,
            config={"retention.ms": str(7 * DAY_MS)},
        )

    @property
    def feedback(self) -> Topic[events_pb2.FeedbackRecorded]:
        return Topic(
            self._name("flywheel.feedback.v1"),
            events_pb2.FeedbackRecorded,
            partitions=JOIN_PARTITIONS,
            config={"retention.ms": str(7 * DAY_MS)},
        )

    @property
    def labeled(self) -> Topic[events_pb2.LabeledExample]:
        return Topic(
            self._name("flywheel.labeled.v1"),
            events_pb2.LabeledExample,
            partitions=3,
            config={"retention.ms": str(30 * DAY_MS)},
        )

    @property
    def model_versions(self) -> Topic[events_pb2.ModelVersionAnnounced]:
        return Topic(
            self._name("flywheel.model-versions.v1"),
            events_pb2.ModelVersionAnnounced,
            partitions=1,
            config={"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"},
        )

    @property
    def model_loads(self) -> Topic[events_pb2.ModelLoadReported]:
        """Every load an inference replica attempted and how it ended (loaded / refused)."""
        return Topic(
            self._name("flywheel.model-loads.v1"),
            events_pb2.ModelLoadReported,
            partitions=1,
            config={"retention.ms": str(7 * DAY_MS)},
        )

    @property
    def late_feedback(self) -> Topic[events_pb2.FeedbackRecorded]:
        """Feedback that arrived past the allowed lateness: the join's late-data DLQ."""
        return Topic(
            self._name("flywheel.feedback.v1.late"),
            events_pb2.FeedbackRecorded,
            partitions=1,
            config={"retention.ms": str(14 * DAY_MS)},
        )

    def all(self) -> list[Topic]:
        main = [self.events, self.predictions, self.feedback, self.labeled, self.model_versions,
                self.model_loads]
        return [*main, *(topic.dlq for topic in main), self.late_feedback]
