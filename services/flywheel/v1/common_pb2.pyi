from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_ROLE_UNSPECIFIED: _ClassVar[ModelRole]
    MODEL_ROLE_CHAMPION: _ClassVar[ModelRole]
    MODEL_ROLE_SHADOW: _ClassVar[ModelRole]

class ModelTask(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_TASK_UNSPECIFIED: _ClassVar[ModelTask]
    MODEL_TASK_BINARY_CLASSIFICATION: _ClassVar[ModelTask]
    MODEL_TASK_MULTICLASS_CLASSIFICATION: _ClassVar[ModelTask]
    MODEL_TASK_REGRESSION: _ClassVar[ModelTask]

class LabelSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LABEL_SOURCE_UNSPECIFIED: _ClassVar[LabelSource]
    LABEL_SOURCE_HUMAN: _ClassVar[LabelSource]
    LABEL_SOURCE_APPLICATION: _ClassVar[LabelSource]
    LABEL_SOURCE_SYSTEM: _ClassVar[LabelSource]
    LABEL_SOURCE_MODEL: _ClassVar[LabelSource]

class ModelVersionStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_VERSION_STATUS_UNSPECIFIED: _ClassVar[ModelVersionStatus]
    MODEL_VERSION_STATUS_READY: _ClassVar[ModelVersionStatus]
    MODEL_VERSION_STATUS_REFUSED: _ClassVar[ModelVersionStatus]
MODEL_ROLE_UNSPECIFIED: ModelRole
MODEL_ROLE_CHAMPION: ModelRole
MODEL_ROLE_SHADOW: ModelRole
MODEL_TASK_UNSPECIFIED: ModelTask
MODEL_TASK_BINARY_CLASSIFICATION: ModelTask
MODEL_TASK_MULTICLASS_CLASSIFICATION: ModelTask
MODEL_TASK_REGRESSION: ModelTask
LABEL_SOURCE_UNSPECIFIED: LabelSource
LABEL_SOURCE_HUMAN: LabelSource
LABEL_SOURCE_APPLICATION: LabelSource
LABEL_SOURCE_SYSTEM: LabelSource
LABEL_SOURCE_MODEL: LabelSource
MODEL_VERSION_STATUS_UNSPECIFIED: ModelVersionStatus
MODEL_VERSION_STATUS_READY: ModelVersionStatus
MODEL_VERSION_STATUS_REFUSED: ModelVersionStatus

class FeatureValue(_message.Message):
    __slots__ = ("double_value", "int64_value", "bool_value", "string_value")
    DOUBLE_VALUE_FIELD_NUMBER: _ClassVar[int]
    INT64_VALUE_FIELD_NUMBER: _ClassVar[int]
    BOOL_VALUE_FIELD_NUMBER: _ClassVar[int]
    STRING_VALUE_FIELD_NUMBER: _ClassVar[int]
    double_value: float
    int64_value: int
    bool_value: bool
    string_value: str
    def __init__(self, double_value: _Optional[float] = ..., int64_value: _Optional[int] = ..., bool_value: _Optional[bool] = ..., string_value: _Optional[str] = ...) -> None: ...

class Vector(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class Label(_message.Message):
    __slots__ = ("class_label", "value")
    CLASS_LABEL_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    class_label: int
    value: float
    def __init__(self, class_label: _Optional[int] = ..., value: _Optional[float] = ...) -> None: ...

class ModelOutput(_message.Message):
    __slots__ = ("predicted_class", "probabilities", "predicted_value")
    PREDICTED_CLASS_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_VALUE_FIELD_NUMBER: _ClassVar[int]
    predicted_class: int
    probabilities: _containers.RepeatedScalarFieldContainer[float]
    predicted_value: float
    def __init__(self, predicted_class: _Optional[int] = ..., probabilities: _Optional[_Iterable[float]] = ..., predicted_value: _Optional[float] = ...) -> None: ...

class OffsetRange(_message.Message):
    __slots__ = ("topic", "partition", "start_offset", "end_offset")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    START_OFFSET_FIELD_NUMBER: _ClassVar[int]
    END_OFFSET_FIELD_NUMBER: _ClassVar[int]
    topic: str
    partition: int
    start_offset: int
    end_offset: int
    def __init__(self, topic: _Optional[str] = ..., partition: _Optional[int] = ..., start_offset: _Optional[int] = ..., end_offset: _Optional[int] = ...) -> None: ...

class Lineage(_message.Message):
    __slots__ = ("training_data", "parent_version", "training_run_id", "trigger_reason", "training_examples", "holdout_examples", "training_mode", "continued_from_version", "mode_note", "trainer")
    TRAINING_DATA_FIELD_NUMBER: _ClassVar[int]
    PARENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    TRAINING_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_REASON_FIELD_NUMBER: _ClassVar[int]
    TRAINING_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    HOLDOUT_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    TRAINING_MODE_FIELD_NUMBER: _ClassVar[int]
    CONTINUED_FROM_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODE_NOTE_FIELD_NUMBER: _ClassVar[int]
    TRAINER_FIELD_NUMBER: _ClassVar[int]
    training_data: _containers.RepeatedCompositeFieldContainer[OffsetRange]
    parent_version: int
    training_run_id: str
    trigger_reason: str
    training_examples: int
    holdout_examples: int
    training_mode: str
    continued_from_version: int
    mode_note: str
    trainer: str
    def __init__(self, training_data: _Optional[_Iterable[_Union[OffsetRange, _Mapping]]] = ..., parent_version: _Optional[int] = ..., training_run_id: _Optional[str] = ..., trigger_reason: _Optional[str] = ..., training_examples: _Optional[int] = ..., holdout_examples: _Optional[int] = ..., training_mode: _Optional[str] = ..., continued_from_version: _Optional[int] = ..., mode_note: _Optional[str] = ..., trainer: _Optional[str] = ...) -> None: ...

class Vocabulary(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, values: _Optional[_Iterable[str]] = ...) -> None: ...

class InputBinding(_message.Message):
    __slots__ = ("input_name", "feature_names")
    INPUT_NAME_FIELD_NUMBER: _ClassVar[int]
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    input_name: str
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, input_name: _Optional[str] = ..., feature_names: _Optional[_Iterable[str]] = ...) -> None: ...

class Provenance(_message.Message):
    __slots__ = ("source_sha256", "source_path", "registered_by", "registered_at_unix_ms")
    SOURCE_SHA256_FIELD_NUMBER: _ClassVar[int]
    SOURCE_PATH_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_BY_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    source_sha256: str
    source_path: str
    registered_by: str
    registered_at_unix_ms: int
    def __init__(self, source_sha256: _Optional[str] = ..., source_path: _Optional[str] = ..., registered_by: _Optional[str] = ..., registered_at_unix_ms: _Optional[int] = ...) -> None: ...

class ModelVersion(_message.Message):
    __slots__ = ("model_name", "version", "artifact_uri", "sha256", "task", "feature_names", "entity_type", "metrics", "aliases", "lineage", "created_at_unix_ms", "output_names", "vocabularies", "inputs", "score_threshold", "provenance", "status", "status_reason", "native_format")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class VocabulariesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Vocabulary
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Vocabulary, _Mapping]] = ...) -> None: ...
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_URI_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    ENTITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_NAMES_FIELD_NUMBER: _ClassVar[int]
    VOCABULARIES_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    SCORE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STATUS_REASON_FIELD_NUMBER: _ClassVar[int]
    NATIVE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    version: int
    artifact_uri: str
    sha256: str
    task: ModelTask
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    entity_type: str
    metrics: _containers.ScalarMap[str, float]
    aliases: _containers.RepeatedScalarFieldContainer[str]
    lineage: Lineage
    created_at_unix_ms: int
    output_names: _containers.RepeatedScalarFieldContainer[str]
    vocabularies: _containers.MessageMap[str, Vocabulary]
    inputs: _containers.RepeatedCompositeFieldContainer[InputBinding]
    score_threshold: float
    provenance: Provenance
    status: ModelVersionStatus
    status_reason: str
    native_format: str
    def __init__(self, model_name: _Optional[str] = ..., version: _Optional[int] = ..., artifact_uri: _Optional[str] = ..., sha256: _Optional[str] = ..., task: _Optional[_Union[ModelTask, str]] = ..., feature_names: _Optional[_Iterable[str]] = ..., entity_type: _Optional[str] = ..., metrics: _Optional[_Mapping[str, float]] = ..., aliases: _Optional[_Iterable[str]] = ..., lineage: _Optional[_Union[Lineage, _Mapping]] = ..., created_at_unix_ms: _Optional[int] = ..., output_names: _Optional[_Iterable[str]] = ..., vocabularies: _Optional[_Mapping[str, Vocabulary]] = ..., inputs: _Optional[_Iterable[_Union[InputBinding, _Mapping]]] = ..., score_threshold: _Optional[float] = ..., provenance: _Optional[_Union[Provenance, _Mapping]] = ..., status: _Optional[_Union[ModelVersionStatus, str]] = ..., status_reason: _Optional[str] = ..., native_format: _Optional[str] = ...) -> None: ...
