import datetime

from flywheel.v1 import common_pb2 as _common_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelVersionChange(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_VERSION_CHANGE_UNSPECIFIED: _ClassVar[ModelVersionChange]
    MODEL_VERSION_CHANGE_REGISTERED: _ClassVar[ModelVersionChange]
    MODEL_VERSION_CHANGE_PROMOTED: _ClassVar[ModelVersionChange]
    MODEL_VERSION_CHANGE_SHADOWED: _ClassVar[ModelVersionChange]
    MODEL_VERSION_CHANGE_ROLLED_BACK: _ClassVar[ModelVersionChange]
    MODEL_VERSION_CHANGE_RETIRED: _ClassVar[ModelVersionChange]

class ModelLoadOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_LOAD_OUTCOME_UNSPECIFIED: _ClassVar[ModelLoadOutcome]
    MODEL_LOAD_OUTCOME_LOADED: _ClassVar[ModelLoadOutcome]
    MODEL_LOAD_OUTCOME_REFUSED: _ClassVar[ModelLoadOutcome]
MODEL_VERSION_CHANGE_UNSPECIFIED: ModelVersionChange
MODEL_VERSION_CHANGE_REGISTERED: ModelVersionChange
MODEL_VERSION_CHANGE_PROMOTED: ModelVersionChange
MODEL_VERSION_CHANGE_SHADOWED: ModelVersionChange
MODEL_VERSION_CHANGE_ROLLED_BACK: ModelVersionChange
MODEL_VERSION_CHANGE_RETIRED: ModelVersionChange
MODEL_LOAD_OUTCOME_UNSPECIFIED: ModelLoadOutcome
MODEL_LOAD_OUTCOME_LOADED: ModelLoadOutcome
MODEL_LOAD_OUTCOME_REFUSED: ModelLoadOutcome

class Event(_message.Message):
    __slots__ = ("event_id", "entity_type", "entity_id", "event_time", "features", "vector")
    class FeaturesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _common_pb2.FeatureValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_common_pb2.FeatureValue, _Mapping]] = ...) -> None: ...
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    ENTITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    ENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    entity_type: str
    entity_id: str
    event_time: _timestamp_pb2.Timestamp
    features: _containers.MessageMap[str, _common_pb2.FeatureValue]
    vector: _common_pb2.Vector
    def __init__(self, event_id: _Optional[str] = ..., entity_type: _Optional[str] = ..., entity_id: _Optional[str] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., features: _Optional[_Mapping[str, _common_pb2.FeatureValue]] = ..., vector: _Optional[_Union[_common_pb2.Vector, _Mapping]] = ...) -> None: ...

class PredictionLogged(_message.Message):
    __slots__ = ("prediction_id", "model_name", "model_version", "artifact_sha256", "role", "entity_type", "entity_id", "feature_names", "features", "output", "prediction_time", "request_id", "task")
    PREDICTION_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_SHA256_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    ENTITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    ENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_TIME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    prediction_id: str
    model_name: str
    model_version: int
    artifact_sha256: str
    role: _common_pb2.ModelRole
    entity_type: str
    entity_id: str
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    features: _containers.RepeatedScalarFieldContainer[float]
    output: _common_pb2.ModelOutput
    prediction_time: _timestamp_pb2.Timestamp
    request_id: str
    task: _common_pb2.ModelTask
    def __init__(self, prediction_id: _Optional[str] = ..., model_name: _Optional[str] = ..., model_version: _Optional[int] = ..., artifact_sha256: _Optional[str] = ..., role: _Optional[_Union[_common_pb2.ModelRole, str]] = ..., entity_type: _Optional[str] = ..., entity_id: _Optional[str] = ..., feature_names: _Optional[_Iterable[str]] = ..., features: _Optional[_Iterable[float]] = ..., output: _Optional[_Union[_common_pb2.ModelOutput, _Mapping]] = ..., prediction_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., request_id: _Optional[str] = ..., task: _Optional[_Union[_common_pb2.ModelTask, str]] = ...) -> None: ...

class FeedbackRecorded(_message.Message):
    __slots__ = ("prediction_id", "label", "source", "idempotency_key", "event_time", "received_time", "request_id")
    PREDICTION_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_TIME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    prediction_id: str
    label: _common_pb2.Label
    source: _common_pb2.LabelSource
    idempotency_key: str
    event_time: _timestamp_pb2.Timestamp
    received_time: _timestamp_pb2.Timestamp
    request_id: str
    def __init__(self, prediction_id: _Optional[str] = ..., label: _Optional[_Union[_common_pb2.Label, _Mapping]] = ..., source: _Optional[_Union[_common_pb2.LabelSource, str]] = ..., idempotency_key: _Optional[str] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., received_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class LabeledExample(_message.Message):
    __slots__ = ("prediction_id", "model_name", "model_version", "role", "entity_type", "entity_id", "feature_names", "features", "label", "prediction", "prediction_time", "feedback_time", "label_source", "task")
    PREDICTION_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    ENTITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    ENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_TIME_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_TIME_FIELD_NUMBER: _ClassVar[int]
    LABEL_SOURCE_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    prediction_id: str
    model_name: str
    model_version: int
    role: _common_pb2.ModelRole
    entity_type: str
    entity_id: str
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    features: _containers.RepeatedScalarFieldContainer[float]
    label: _common_pb2.Label
    prediction: _common_pb2.ModelOutput
    prediction_time: _timestamp_pb2.Timestamp
    feedback_time: _timestamp_pb2.Timestamp
    label_source: _common_pb2.LabelSource
    task: _common_pb2.ModelTask
    def __init__(self, prediction_id: _Optional[str] = ..., model_name: _Optional[str] = ..., model_version: _Optional[int] = ..., role: _Optional[_Union[_common_pb2.ModelRole, str]] = ..., entity_type: _Optional[str] = ..., entity_id: _Optional[str] = ..., feature_names: _Optional[_Iterable[str]] = ..., features: _Optional[_Iterable[float]] = ..., label: _Optional[_Union[_common_pb2.Label, _Mapping]] = ..., prediction: _Optional[_Union[_common_pb2.ModelOutput, _Mapping]] = ..., prediction_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., feedback_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., label_source: _Optional[_Union[_common_pb2.LabelSource, str]] = ..., task: _Optional[_Union[_common_pb2.ModelTask, str]] = ...) -> None: ...

class AliasChange(_message.Message):
    __slots__ = ("alias", "version", "previous_version")
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    alias: str
    version: int
    previous_version: int
    def __init__(self, alias: _Optional[str] = ..., version: _Optional[int] = ..., previous_version: _Optional[int] = ...) -> None: ...

class ModelVersionAnnounced(_message.Message):
    __slots__ = ("model_version", "change", "alias_changes", "aliases", "reason", "announced_at")
    class AliasesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    ALIAS_CHANGES_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ANNOUNCED_AT_FIELD_NUMBER: _ClassVar[int]
    model_version: _common_pb2.ModelVersion
    change: ModelVersionChange
    alias_changes: _containers.RepeatedCompositeFieldContainer[AliasChange]
    aliases: _containers.ScalarMap[str, int]
    reason: str
    announced_at: _timestamp_pb2.Timestamp
    def __init__(self, model_version: _Optional[_Union[_common_pb2.ModelVersion, _Mapping]] = ..., change: _Optional[_Union[ModelVersionChange, str]] = ..., alias_changes: _Optional[_Iterable[_Union[AliasChange, _Mapping]]] = ..., aliases: _Optional[_Mapping[str, int]] = ..., reason: _Optional[str] = ..., announced_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ModelLoadReported(_message.Message):
    __slots__ = ("model_name", "version", "alias", "outcome", "reason", "replica", "reported_at")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    REPORTED_AT_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    version: int
    alias: str
    outcome: ModelLoadOutcome
    reason: str
    replica: str
    reported_at: _timestamp_pb2.Timestamp
    def __init__(self, model_name: _Optional[str] = ..., version: _Optional[int] = ..., alias: _Optional[str] = ..., outcome: _Optional[_Union[ModelLoadOutcome, str]] = ..., reason: _Optional[str] = ..., replica: _Optional[str] = ..., reported_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
