from flywheel.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RowStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROW_STATUS_UNSPECIFIED: _ClassVar[RowStatus]
    ROW_STATUS_OK: _ClassVar[RowStatus]
    ROW_STATUS_ENTITY_NOT_FOUND: _ClassVar[RowStatus]
    ROW_STATUS_FEATURE_MISSING: _ClassVar[RowStatus]
ROW_STATUS_UNSPECIFIED: RowStatus
ROW_STATUS_OK: RowStatus
ROW_STATUS_ENTITY_NOT_FOUND: RowStatus
ROW_STATUS_FEATURE_MISSING: RowStatus

class FeatureRow(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class PredictRequest(_message.Message):
    __slots__ = ("model", "version", "entity_ids", "rows")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ENTITY_IDS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    entity_ids: EntityIds
    rows: FeatureRows
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., entity_ids: _Optional[_Union[EntityIds, _Mapping]] = ..., rows: _Optional[_Union[FeatureRows, _Mapping]] = ...) -> None: ...

class EntityIds(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ids: _Optional[_Iterable[str]] = ...) -> None: ...

class FeatureRows(_message.Message):
    __slots__ = ("rows",)
    ROWS_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[FeatureRow]
    def __init__(self, rows: _Optional[_Iterable[_Union[FeatureRow, _Mapping]]] = ...) -> None: ...

class RowPrediction(_message.Message):
    __slots__ = ("prediction_id", "entity_id", "status", "output", "detail")
    PREDICTION_ID_FIELD_NUMBER: _ClassVar[int]
    ENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    prediction_id: str
    entity_id: str
    status: RowStatus
    output: _common_pb2.ModelOutput
    detail: str
    def __init__(self, prediction_id: _Optional[str] = ..., entity_id: _Optional[str] = ..., status: _Optional[_Union[RowStatus, str]] = ..., output: _Optional[_Union[_common_pb2.ModelOutput, _Mapping]] = ..., detail: _Optional[str] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("model_name", "model_version", "predictions")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: int
    predictions: _containers.RepeatedCompositeFieldContainer[RowPrediction]
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[int] = ..., predictions: _Optional[_Iterable[_Union[RowPrediction, _Mapping]]] = ...) -> None: ...
