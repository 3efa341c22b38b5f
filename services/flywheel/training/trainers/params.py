"""Hyperparameters of the built-in trainers: checked when the spec is loaded, so a typo or a
bad value is an error naming `training.params.<key>`, not a failed run an hour later."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flywheel.training.trainers.base import TrainerError


class Params(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LogisticParams(Params):
    # Inverse of the L2 regularization strength, as scikit-learn's LogisticRegression.
    C: float = Field(1.0, gt=0)
    max_iter: int = Field(300, gt=0)
    # fine_tune: lbfgs iterations started from the champion's weights on the recent window
    # (few: the champion's weights are the prior; many: a fit from scratch).
    fine_tune_max_iter: int = Field(15, gt=0)


class RidgeParams(Params):
    # L2 strength; when fine-tuning, the pull toward the champion's coefficients.
    alpha: float = Field(1.0, gt=0)


class MLPParams(Params):
    hidden_layer_sizes: tuple[int, ...] = (32,)
    alpha: float = Field(1e-4, ge=0)
    learning_rate_init: float = Field(1e-3, gt=0)
    max_iter: int = Field(200, gt=0)
    # fine_tune: epochs of Adam from the champion's weights on the recent window.
    fine_tune_max_iter: int = Field(20, gt=0)
    random_state: int = 0


class LightGBMParams(Params):
    n_estimators: int = Field(100, gt=0)
    learning_rate: float = Field(0.1, gt=0)
    num_leaves: int = Field(31, gt=1)
    max_depth: int = -1
    min_child_samples: int = Field(20, gt=0)
    subsample: float = Field(1.0, gt=0, le=1)
    colsample_bytree: float = Field(1.0, gt=0, le=1)
    reg_lambda: float = Field(0.0, ge=0)
    # fine_tune: trees added on top of the champion's, fitted on the recent window.
    fine_tune_estimators: int = Field(50, gt=0)
    random_state: int = 0


class XGBoostParams(Params):
    n_estimators: int = Field(100, gt=0)
    learning_rate: float = Field(0.3, gt=0)
    max_depth: int = Field(6, gt=0)
    min_child_weight: float = Field(1.0, ge=0)
    subsample: float = Field(1.0, gt=0, le=1)
    colsample_bytree: float = Field(1.0, gt=0, le=1)
    reg_lambda: float = Field(1.0, ge=0)
    # fine_tune: boosting rounds added on top of the champion's.
    fine_tune_estimators: int = Field(50, gt=0)
    random_state: int = 0


def parse(kind: type[Params], trainer: str, params: Mapping[str, Any]) -> Params:
    try:
        return kind.model_validate(dict(params))
    except ValidationError as error:
        problems = []
        for item in error.errors():
            key = ".".join(str(p) for p in item["loc"]) or "?"
            problems.append(f"training.params.{key}: {item['msg']}")
        allowed = ", ".join(kind.model_fields)
        raise TrainerError(f"trainer {trainer}: {'; '.join(problems)} (parameters: {allowed})"
                           ) from None
