"""The declarative spec file: entity schemas, models, triggers, the promotion gate.

Loaded once at start (path from settings) and passed down. Pure data plus validation.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from flywheel.common.errors import InvalidArgument, NotFound


class Dtype(str, Enum):
    DOUBLE = "double"
    INT64 = "int64"
    BOOL = "bool"
    STRING = "string"


class Task(str, Enum):
    BINARY_CLASSIFICATION = "binary_classification"
    MULTICLASS_CLASSIFICATION = "multiclass_classification"
    REGRESSION = "regression"

    @property
    def is_classification(self) -> bool:
        return self is not Task.REGRESSION


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FeatureSpec(_Frozen):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    dtype: Dtype = Dtype.DOUBLE
    allow_nan: bool = False


class VectorSpec(_Frozen):
    dimension: int = Field(gt=0, le=4096)
    # Vectors needed before an IVF index is trained on real data (exact flat index before).
    ivf_min_vectors: int = Field(20000, gt=0)


class EntitySpec(_Frozen):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$")
    features: tuple[FeatureSpec, ...]
    vector: VectorSpec | None = None
    # Events further in the future than this are refused (clock skew allowance).
    max_future_seconds: float = Field(300.0, ge=0)

    @field_validator("features")
    @classmethod
    def _unique(cls, features: tuple[FeatureSpec, ...]) -> tuple[FeatureSpec, ...]:
        names = [f.name for f in features]
        if len(set(names)) != len(names):
            raise ValueError("feature names must be unique")
        return features

    def feature(self, name: str) -> FeatureSpec:
        for feature in self.features:
            if feature.name == name:
                return feature
        raise InvalidArgument(
            f"unknown feature {name!r} for entity type {self.name!r}", field="feature_names"
        )

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]


class TriggerSpec(_Frozen):
    # Retrain after this many new labeled examples (0: off).
    every_n_labels: int = Field(0, ge=0)
    # Champion accuracy on the last `window` joined labels below this (0: off).
    accuracy_below: float = Field(0.0, ge=0, le=1)
    # Champion live accuracy below its training-time accuracy by more than this (0: off).
    accuracy_drop: float = Field(0.0, ge=0, le=1)
    window: int = Field(500, gt=0)
    # Population stability index of any feature past this (0: off).
    psi_above: float = Field(0.0, ge=0)
    # Retrain at least this often (0: off).
    schedule_seconds: float = Field(0.0, ge=0)
    # No new run sooner than this after the last one started.
    debounce_seconds: float = Field(30.0, ge=0)


class GateSpec(_Frozen):
    metric: str = "accuracy"
    # Candidate must beat the champion by at least this much on the same holdout.
    min_improvement: float = 0.0
    min_holdout: int = Field(200, gt=0)


class TrainingSpec(_Frozen):
    # Train on at most this many of the most recent labeled examples.
    window: int = Field(5000, gt=0)
    holdout_fraction: float = Field(0.2, gt=0, lt=1)
    min_examples: int = Field(200, gt=0)


class LiveGateSpec(_Frozen):
    # Shadow predictions joined with labels needed before live promotion is decided.
    min_labels: int = Field(300, gt=0)
    # Roll back a new champion whose live accuracy falls below its predecessor's by this.
    rollback_margin: float = Field(0.05, ge=0, le=1)


class ModelSpec(_Frozen):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$")
    entity_type: str
    task: Task = Task.BINARY_CLASSIFICATION
    # Input order of the model.
    features: tuple[str, ...]
    num_classes: int = Field(2, ge=2)
    triggers: TriggerSpec = TriggerSpec()
    gate: GateSpec = GateSpec()
    training: TrainingSpec = TrainingSpec()
    live: LiveGateSpec = LiveGateSpec()


class FeedbackSpec(_Frozen):
    # Feedback later than this after its prediction goes to the late-data DLQ.
    allowed_lateness_seconds: float = Field(3600.0, gt=0)
    # How long a prediction waits in the join state for its feedback (and vice versa).
    join_ttl_seconds: float = Field(7 * 24 * 3600.0, gt=0)


class FlywheelSpec(_Frozen):
    entities: tuple[EntitySpec, ...]
    models: tuple[ModelSpec, ...] = ()
    feedback: FeedbackSpec = FeedbackSpec()

    @model_validator(mode="after")
    def _models_match_entities(self) -> FlywheelSpec:
        entities = {e.name: e for e in self.entities}
        for model in self.models:
            entity = entities.get(model.entity_type)
            if entity is None:
                raise ValueError(f"model {model.name}: unknown entity type {model.entity_type}")
            missing = set(model.features) - set(entity.feature_names)
            if missing:
                raise ValueError(f"model {model.name}: unknown features {sorted(missing)}")
        return self

    def entity(self, name: str) -> EntitySpec:
        for entity in self.entities:
            if entity.name == name:
                return entity
        if not name:
            raise InvalidArgument("entity_type is required", field="entity_type")
        raise InvalidArgument(f"unknown entity type {name!r}", field="entity_type")

    def model(self, name: str) -> ModelSpec:
        for model in self.models:
            if model.name == name:
                return model
        raise NotFound(f"model {name!r} is not declared in the spec", field="model")


def load_spec(path: Path) -> FlywheelSpec:
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"spec file {path} not found (set FLYWHEEL_SPEC_PATH or create flywheel.yaml)"
        ) from None
    return FlywheelSpec.model_validate(raw)
