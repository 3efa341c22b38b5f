"""Trainers: the built-ins by name, or a user's `module:factory` (see base.Trainer).

`trainer_for(model)` builds the trainer a model's spec declares (`training.trainer`,
`training.params`), raising TrainerError naming the spec key when it cannot; the training
service calls `check_trainers(spec)` right after loading the spec, so a bad trainer or
parameter stops the service at start with that message.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from flywheel.common.spec import FlywheelSpec, ModelSpec
from flywheel.training.trainers.base import (
    INPUT_NAME,
    FittedModel,
    NativeState,
    Trainer,
    TrainerError,
    TrainingData,
)
from flywheel.training.trainers.params import (
    LightGBMParams,
    LogisticParams,
    MLPParams,
    RidgeParams,
    XGBoostParams,
    parse,
)

__all__ = ["BUILT_IN", "INPUT_NAME", "FittedModel", "NativeState", "Trainer", "TrainerError",
           "TrainingData", "check_trainers", "make_trainer", "trainer_for"]


def _logistic(params: dict[str, Any]) -> Trainer:
    from flywheel.training.trainers.sklearn_models import LogisticTrainer

    return LogisticTrainer(parse(LogisticParams, "logistic", params))


def _ridge(params: dict[str, Any]) -> Trainer:
    from flywheel.training.trainers.sklearn_models import RidgeTrainer

    return RidgeTrainer(parse(RidgeParams, "ridge", params))


def _mlp(params: dict[str, Any]) -> Trainer:
    from flywheel.training.trainers.sklearn_models import MLPTrainer

    return MLPTrainer(parse(MLPParams, "mlp", params))


def _lightgbm(params: dict[str, Any]) -> Trainer:
    from flywheel.training.trainers.boosted import LightGBMTrainer

    return LightGBMTrainer(parse(LightGBMParams, "lightgbm", params))


def _xgboost(params: dict[str, Any]) -> Trainer:
    from flywheel.training.trainers.boosted import XGBoostTrainer

    return XGBoostTrainer(parse(XGBoostParams, "xgboost", params))


BUILT_IN: dict[str, Callable[[dict[str, Any]], Trainer]] = {
    "logistic": _logistic, "ridge": _ridge, "mlp": _mlp, "lightgbm": _lightgbm,
    "xgboost": _xgboost,
}
# Which tasks each built-in serves (a user's trainer says so itself by raising in fit).
_CLASSIFICATION_ONLY, _REGRESSION_ONLY = {"logistic"}, {"ridge"}


def make_trainer(name: str, params: dict[str, Any] | None = None) -> Trainer:
    params = dict(params or {})
    if name in BUILT_IN:
        return BUILT_IN[name](params)
    module_name, _, factory_name = name.partition(":")
    if not module_name or not factory_name:
        raise TrainerError(f"training.trainer: unknown trainer {name!r}; one of "
                           f"{', '.join(BUILT_IN)}, or module:factory")
    try:
        factory = getattr(importlib.import_module(module_name), factory_name)
    except (ImportError, AttributeError) as error:
        raise TrainerError(f"training.trainer: cannot load {name!r}: {error}") from None
    try:
        trainer = factory(**params)
    except TypeError as error:
        raise TrainerError(f"training.params for {name}: {error}") from None
    if not isinstance(trainer, Trainer):
        raise TrainerError(f"training.trainer: {name} returned {type(trainer).__name__}, which "
                           "lacks name, native_format or fit (see the Trainer protocol)")
    return trainer


def trainer_for(model: ModelSpec) -> Trainer:
    name = model.trainer
    if name in _CLASSIFICATION_ONLY and not model.task.is_classification:
        raise TrainerError(f"model {model.name}: training.trainer {name} is for classification; "
                           "a regression model uses ridge, mlp, lightgbm or xgboost")
    if name in _REGRESSION_ONLY and model.task.is_classification:
        raise TrainerError(f"model {model.name}: training.trainer {name} is for regression; "
                           "a classifier uses logistic, mlp, lightgbm or xgboost")
    try:
        return make_trainer(name, model.training.params)
    except TrainerError as error:
        raise TrainerError(f"model {model.name}: {error}") from None


def check_trainers(spec: FlywheelSpec) -> dict[str, Trainer]:
    """Every model's trainer, built once; raises TrainerError on the first that fails."""
    return {model.name: trainer_for(model) for model in spec.models}

