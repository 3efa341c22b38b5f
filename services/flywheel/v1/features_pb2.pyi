import datetime

from flywheel.v1 import common_pb2 as _common_pb2
from flywheel.v1 import events_pb2 as _events_pb2
from flywheel.v1 import ingest_pb2 as _ingest_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FeatureStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FEATURE_STATUS_UNSPECIFIED: _ClassVar[FeatureStatus]
    FEATURE_STATUS_FOUND: _ClassVar[FeatureStatus]
    FEATURE_STATUS_NOT_FOUND: _ClassVar[FeatureStatus]

class FeatureDtype(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FEATURE_DTYPE_UNSPECIFIED: _ClassVar[FeatureDtype]
    FEATURE_DTYPE_DOUBLE: _ClassVar[FeatureDtype]
    FEATURE_DTYPE_INT64: _ClassVar[FeatureDtype]
    FEATURE_DTYPE_BOOL: _ClassVar[FeatureDtype]
    FEATURE_DTYPE_STRING: _ClassVar[FeatureDtype]
FEATURE_STATUS_UNSPECIFIED: FeatureStatus
FEATURE_STATUS_FOUND: FeatureStatus
FEATURE_STATUS_NOT_FOUND: FeatureStatus
FEATURE_DTYPE_UNSPECIFIED: FeatureDtype
FEATURE_DTYPE_DOUBLE: FeatureDtype
FEATURE_DTYPE_INT64: FeatureDtype
FEATURE_DTYPE_BOOL: FeatureDtype
FEATURE_DTYPE_STRING: FeatureDtype

class GetOnlineFeaturesRequest(_message.Message):
    __slots__ = ("entity_type", "entity_ids", "feature_names")
    ENTITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    ENTITY_IDS_FIELD_NUMBER: _ClassVar[int]
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    entity_type: str
    entity_ids: _containers.RepeatedScalarFieldContainer[str]
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, entity_type: _Optional[str] = ..., entity_ids: _Optional[_Iterable[str]] = ..., feature_names: _Optional[_Iterable[str]] = ...) -> None: ...

class EntityFeatures(_message.Message):
    __slots__ = ("entity_id", "status", "values", "event_time")
    ENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    entity_id: str
    status: FeatureStatus
    values: _containers.RepeatedCompositeFieldContainer[_common_pb2.FeatureValue]
    event_time: _timestamp_pb2.Timestamp
    def __init__(self, entity_id: _Optional[str] = ..., status: _Optional[_Union[FeatureStatus, str]] = ..., values: _Optional[_Iterable[_Union[_common_pb2.FeatureValue, _Mapping]]] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetOnlineFeaturesResponse(_message.Message):
    __slots__ = ("feature_names", "entities")
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    ENTITIES_FIELD_NUMBER: _ClassVar[int]
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    entities: _containers.RepeatedCompositeFieldContainer[EntityFeatures]
    def __init__(self, feature_names: _Optional[_Iterable[str]] = ..., entities: _Optional[_Iterable[_Union[EntityFeatures, _Mapping]]] = ...) -> None: ...

class WriteFeaturesRequest(_message.Message):
    __slots__ = ("rows",)
    ROWS_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[_events_pb2.Event]
    def __init__(self, rows: _Optional[_Iterable[_Union[_events_pb2.Event, _Mapping]]] = ...) -> None: ...

class WriteFeaturesResponse(_message.Message):
    __slots__ = ("written_count", "stale_count", "rejections")
    WRITTEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    STALE_COUNT_FIELD_NUMBER: _ClassVar[int]
    REJECTIONS_FIELD_NUMBER: _ClassVar[int]
    written_count: int
    stale_count: int
    rejections: _containers.RepeatedCompositeFieldContainer[_ingest_pb2.EventRejection]
    def __init__(self, written_count: _Optional[int] = ..., stale_count: _Optional[int] = ..., rejections: _Optional[_Iterable[_Union[_ingest_pb2.EventRejection, _Mapping]]] = ...) -> None: ...

class SearchSimilarRequest(_message.Message):
    __slots__ = ("entity_type", "vector", "entity_id", "k")
    ENTITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    ENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    entity_type: str
    vector: _common_pb2.Vector
    entity_id: str
    k: int
    def __init__(self, entity_type: _Optional[str] = ..., vector: _Optional[_Union[_common_pb2.Vector, _Mapping]] = ..., entity_id: _Optional[str] = ..., k: _Optional[int] = ...) -> None: ...

class Neighbor(_message.Message):
    __slots__ = ("entity_id", "distance")
    ENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    entity_id: str
    distance: float
    def __init__(self, entity_id: _Optional[str] = ..., distance: _Optional[float] = ...) -> None: ...

class SearchSimilarResponse(_message.Message):
    __slots__ = ("neighbors",)
    NEIGHBORS_FIELD_NUMBER: _ClassVar[int]
    neighbors: _containers.RepeatedCompositeFieldContainer[Neighbor]
    def __init__(self, neighbors: _Optional[_Iterable[_Union[Neighbor, _Mapping]]] = ...) -> None: ...

class GetFeatureSchemaRequest(_message.Message):
    __slots__ = ("entity_type",)
    ENTITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    entity_type: str
    def __init__(self, entity_type: _Optional[str] = ...) -> None: ...

class FeatureDefinition(_message.Message):
    __slots__ = ("name", "dtype", "allow_nan")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    ALLOW_NAN_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: FeatureDtype
    allow_nan: bool
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[_Union[FeatureDtype, str]] = ..., allow_nan: _Optional[bool] = ...) -> None: ...

class GetFeatureSchemaResponse(_message.Message):
    __slots__ = ("entity_type", "features", "vector_dimension")
    ENTITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    VECTOR_DIMENSION_FIELD_NUMBER: _ClassVar[int]
    entity_type: str
    features: _containers.RepeatedCompositeFieldContainer[FeatureDefinition]
    vector_dimension: int
    def __init__(self, entity_type: _Optional[str] = ..., features: _Optional[_Iterable[_Union[FeatureDefinition, _Mapping]]] = ..., vector_dimension: _Optional[int] = ...) -> None: ...
