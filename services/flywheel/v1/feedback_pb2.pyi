import datetime

from flywheel.v1 import common_pb2 as _common_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RecordFeedbackRequest(_message.Message):
    __slots__ = ("prediction_id", "label", "source", "idempotency_key", "event_time")
    PREDICTION_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    prediction_id: str
    label: _common_pb2.Label
    source: _common_pb2.LabelSource
    idempotency_key: str
    event_time: _timestamp_pb2.Timestamp
    def __init__(self, prediction_id: _Optional[str] = ..., label: _Optional[_Union[_common_pb2.Label, _Mapping]] = ..., source: _Optional[_Union[_common_pb2.LabelSource, str]] = ..., idempotency_key: _Optional[str] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RecordFeedbackResponse(_message.Message):
    __slots__ = ("idempotency_key",)
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    def __init__(self, idempotency_key: _Optional[str] = ...) -> None: ...

class RecordFeedbackBatchRequest(_message.Message):
    __slots__ = ("feedback",)
    FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    feedback: _containers.RepeatedCompositeFieldContainer[RecordFeedbackRequest]
    def __init__(self, feedback: _Optional[_Iterable[_Union[RecordFeedbackRequest, _Mapping]]] = ...) -> None: ...

class FeedbackRejection(_message.Message):
    __slots__ = ("index", "prediction_id", "field", "reason")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_ID_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    index: int
    prediction_id: str
    field: str
    reason: str
    def __init__(self, index: _Optional[int] = ..., prediction_id: _Optional[str] = ..., field: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RecordFeedbackBatchResponse(_message.Message):
    __slots__ = ("accepted_count", "rejections")
    ACCEPTED_COUNT_FIELD_NUMBER: _ClassVar[int]
    REJECTIONS_FIELD_NUMBER: _ClassVar[int]
    accepted_count: int
    rejections: _containers.RepeatedCompositeFieldContainer[FeedbackRejection]
    def __init__(self, accepted_count: _Optional[int] = ..., rejections: _Optional[_Iterable[_Union[FeedbackRejection, _Mapping]]] = ...) -> None: ...
