"""The declarative spec file: entity schemas, models, triggers, the promotion gate.

Loaded once at start (path from settings) and passed down. Pure data plus validation.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any

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
    # A string feature's categories: a model reads the value as its index + 1, and any value
    # not listed as 0 (the reserved unknown code). Required for a string feature a model
    # reads; the version registered freezes it (see flywheel.common.encoding).
    vocabulary: tuple[str, ...] | None = None

    @model_validator(mode="after")
    def _vocabulary_for_strings(self) -> FeatureSpec:
        if self.vocabulary is not None:
            if self.dtype is not Dtype.STRING:
                raise ValueError(f"feature {self.name}: only a string feature has a vocabulary")
            if len(set(self.vocabulary)) != len(self.vocabulary) or not self.vocabulary:
                raise ValueError(f"feature {self.name}: vocabulary must be non-empty and unique")
        return self


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
    # Regression: champion live error (the live metric, mae or rmse) above this (0: off).
    error_above: float = Field(0.0, ge=0)
    # Regression: champion live error above its training-time error by more than this (0: off).
    error_increase: float = Field(0.0, ge=0)
    window: int = Field(500, gt=0)
    # Population stability index of any feature past this (0: off).
    psi_above: float = Field(0.0, ge=0)
    # Retrain at least this often (0: off).
    schedule_seconds: float = Field(0.0, ge=0)
    # No new run sooner than this after the last one started.
    debounce_seconds: float = Field(30.0, ge=0)


class GateSpec(_Frozen):
    # The metric judged on the holdout; empty: the task's own (accuracy for classification,
    # mae for regression). See ModelSpec.gate_metric.
    metric: str = ""
    # Candidate must beat the champion by at least this much on the same holdout. With 0, a
    # tie passes: the candidate learned from more recent data (see training.gate.decide).
    min_improvement: float = Field(0.0, ge=0)
    min_holdout: int = Field(200, gt=0)


class TrainingMode(str, Enum):
    # A new model on the recent window (what every run did before modes existed).
    SCRATCH = "scratch"
    # Continue the champion's native state on the recent window.
    FINE_TUNE = "fine_tune"
    # Both candidates in one run, each gated against the champion; the better passing wins.
    BEST_OF = "best_of"


class TrainingSpec(_Frozen):
    # Train on at most this many of the most recent labeled examples.
    window: int = Field(5000, gt=0)
    holdout_fraction: float = Field(0.2, gt=0, lt=1)
    min_examples: int = Field(200, gt=0)
    # A built-in trainer (logistic, ridge, mlp, lightgbm, xgboost) or "module:factory"
    # naming a user's (flywheel.training.trainers). Empty: logistic for classification,
    # ridge for regression.
    trainer: str = ""
    mode: TrainingMode = TrainingMode.SCRATCH
    # The trainer's hyperparameters; checked against the trainer when the spec is loaded.
    params: dict[str, Any] = Field(default_factory=dict)
    # Largest difference allowed between the native model's and its ONNX export's outputs
    # on the holdout (probabilities, or values relative to the label scale).
    parity_tolerance: float = Field(1e-3, gt=0)


class LiveGateSpec(_Frozen):
    # Shadow predictions joined with labels needed before live promotion is decided.
    min_labels: int = Field(300, gt=0)
    # Roll back a new champion whose live metric (the gate's) is worse than its
    # predecessor's on the same joined labels by more than this.
    rollback_margin: float = Field(0.05, ge=0)


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

    @property
    def gate_metric(self) -> str:
        """The metric that judges this model offline and live: the gate's, else the task's."""
        if self.gate.metric:
            return self.gate.metric
        return "accuracy" if self.task.is_classification else "mae"

    @property
    def trainer(self) -> str:
        if self.training.trainer:
            return self.training.trainer
        return "logistic" if self.task.is_classification else "ridge"

    @model_validator(mode="after")
    def _metrics_fit_the_task(self) -> ModelSpec:
        classification = {"accuracy", "f1", "roc_auc", "log_loss"}
        regression = {"mae", "rmse"}
        allowed = classification if self.task.is_classification else regression
        if self.gate_metric not in allowed:
            raise ValueError(f"model {self.name}: gate.metric {self.gate_metric!r} does not fit "
                             f"task {self.task.value} (one of {sorted(allowed)})")
        t = self.triggers
        if self.task.is_classification and (t.error_above or t.error_increase):
            raise ValueError(f"model {self.name}: triggers.error_above / error_increase are for "
                             "regression; a classifier uses accuracy_below / accuracy_drop")
        if not self.task.is_classification and (t.accuracy_below or t.accuracy_drop):
            raise ValueError(f"model {self.name}: triggers.accuracy_below / accuracy_drop are for "
                             "classification; a regression model uses error_above / "
                             "error_increase")
        return self


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
            for name in model.features:
                feature = entity.feature(name)
                if feature.dtype is Dtype.STRING and feature.vocabulary is None:
                    raise ValueError(f"model {model.name} reads string feature {name}: declare "
                                     f"its categories (vocabulary: [...]) in entity "
                                     f"{entity.name}")
        return self

    def vocabularies(self, model: ModelSpec) -> dict[str, tuple[str, ...]]:
        """The categories of the string features `model` reads, by feature name."""
        entity = self.entity(model.entity_type)
        out = {}
        for name in model.features:
            feature = entity.feature(name)
            if feature.vocabulary is not None:
                out[name] = feature.vocabulary
        return out

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
