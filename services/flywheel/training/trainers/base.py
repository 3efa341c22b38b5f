"""The contract every trainer keeps, built-in or a user's own.

A trainer fits on the numbers the model reads (float64, in the model's input order; a string
feature arrives as its category code, see flywheel.common.encoding) and gives back a
`FittedModel`, which

- predicts natively (for the parity check against its own ONNX export),
- exports ONNX with one float32 input named `features` ([batch, n_features]); a classifier
  exports `label` (int64, [batch]) and `probabilities` (float32, [batch, classes], no ZipMap),
  a regressor `variable` (float32, [batch, 1]),
- gives its native state: files that load without executing code (LightGBM text, XGBoost
  JSON, scikit-learn through skops), stored beside the ONNX in the registry, so the next run
  can continue from it (`fit(..., parent=state)`, training.mode fine_tune).

A user's trainer is named in the spec as `module:factory`; `factory(**params)` returns an
object with `name`, `native_format` and `fit` as below.

A trainer may also say `streams = True` (a class attribute; absent means False, read it with
`getattr(trainer, "streams", False)`): it then takes `TrainingData.X` either as an array or as
a window's rows on disk (`flywheel.training.spill.SpilledRows`), which it reads batch by batch
and never whole (`streamed(X)` tells which it got). Every other trainer gets an array: whoever
calls it materializes the rows first. The built-in lightgbm and xgboost trainers stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from flywheel.common.spec import Task
from flywheel.training.scoring import Scores
from flywheel.training.spill import SpilledRows

INPUT_NAME = "features"


@dataclass(frozen=True)
class TrainingData:
    # [rows, features] float64, model input order; rows on disk only for a streaming trainer.
    X: np.ndarray | SpilledRows
    y: np.ndarray  # class indices (classification) or values (regression)
    task: Task
    feature_names: tuple[str, ...]
    # Column -> number of codes of a categorical (string) feature, the unknown code included.
    categorical: Mapping[int, int] = field(default_factory=dict)
    num_classes: int = 2

    @property
    def n_features(self) -> int:
        return self.X.shape[1]


@dataclass(frozen=True)
class NativeState:
    """A trainer's own representation of a fitted model, as files."""

    format: str  # e.g. "lightgbm-text"
    files: Mapping[str, bytes]  # relative file name -> content


class FittedModel(Protocol):
    def predict(self, X: np.ndarray) -> Scores: ...

    def to_onnx(self) -> bytes: ...

    def native_state(self) -> NativeState | None: ...


@runtime_checkable
class Trainer(Protocol):
    # The name lineage records: a built-in's name, or "module:factory".
    name: str
    # The NativeState.format this trainer writes and continues from ("" : none).
    native_format: str

    # Optional, not declared here so that a trainer without it still passes isinstance:
    # `streams: bool`, True when fit reads `data.X` as SpilledRows batch by batch.

    def fit(self, data: TrainingData, parent: NativeState | None = None) -> FittedModel:
        """A model fitted on `data`; with `parent`, one that continues it (fine-tuning)."""
        ...


class TrainerError(ValueError):
    """A trainer or its parameters cannot be used; the message names the spec key."""


def streamed(X: np.ndarray | SpilledRows) -> bool:
    """Whether `X` is rows on disk, to be read in batches, rather than an array."""
    return not isinstance(X, np.ndarray) and hasattr(X, "batches")


def to_float32_grid(X: np.ndarray) -> np.ndarray:
    """`X` rounded to float32 and back: serving feeds float32, so a model that learns its
    thresholds on these values compares the same numbers online."""
    return np.asarray(X, dtype=np.float32).astype(np.float64)
