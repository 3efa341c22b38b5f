"""How a model's outputs become one ModelOutput per row: the rule, fixed per loaded version.

The rule is read from the outputs of the warm-up run (their dtypes and actual shapes, so a
dimension the graph leaves open is known too), in this order:

- Regression (or a task left unspecified on a model without an integer output): the first
  float output, its first value per row, is `predicted_value`.
- Classification: the label is the first integer output with one value per row ([N] or
  [N, 1]); the probabilities are the first float output of shape [N, C] with C >= 2, one
  probability per class. A label alone gives the class; probabilities alone give the most
  likely class; both give both.
- A binary classifier with no probability matrix whose float output has one value per row
  ([N] or [N, 1]) gives a score: the positive-class probability p. Its probabilities are
  [1 - p, p], and its class is the label output's when it has one, else 1 when
  p >= the version's `score_threshold` (0: the default 0.5), else 0. The score must be a
  probability: a model that ends in logits applies its sigmoid in the graph.
- Any other classifier (no label, no probability matrix, and not a binary score) is refused
  at load time, as is a regression without a float output: it could only answer nonsense.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from flywheel.v1 import common_pb2

REGRESSION = common_pb2.MODEL_TASK_REGRESSION
BINARY = common_pb2.MODEL_TASK_BINARY_CLASSIFICATION
DEFAULT_THRESHOLD = 0.5


class UnusableOutputs(ValueError):
    """The outputs fit no rule of this module; the message says what was expected."""


def _per_row(array: np.ndarray) -> int:
    return int(np.prod(array.shape[1:])) if array.ndim >= 1 else 0


@dataclass(frozen=True)
class OutputRule:
    """Indices into the session's outputs (in signature order) and what each one is."""

    regression: bool
    value_at: int | None = None
    label_at: int | None = None
    probabilities_at: int | None = None
    score_at: int | None = None
    threshold: float = DEFAULT_THRESHOLD

    @classmethod
    def of(cls, task: int, samples: Sequence[np.ndarray], threshold: float = 0.0) -> OutputRule:
        """The rule for outputs like `samples` (one warm-up run's outputs, rows first)."""
        floats = [i for i, a in enumerate(samples) if a.dtype.kind == "f" and a.ndim >= 1]
        labels = [i for i, a in enumerate(samples)
                  if a.dtype.kind in "iu" and a.ndim in (1, 2) and _per_row(a) == 1]
        if task == REGRESSION or (task == 0 and not labels):
            if not floats:
                raise UnusableOutputs("a regression model needs a float output (one value per row)")
            return cls(regression=True, value_at=floats[0])
        label_at = labels[0] if labels else None
        matrices = [i for i in floats if samples[i].ndim == 2 and samples[i].shape[1] >= 2]
        if matrices:
            return cls(regression=False, label_at=label_at, probabilities_at=matrices[0])
        scores = [i for i in floats if samples[i].ndim in (1, 2) and _per_row(samples[i]) == 1]
        if scores and task == BINARY:
            return cls(regression=False, label_at=label_at, score_at=scores[0],
                       threshold=threshold or DEFAULT_THRESHOLD)
        if label_at is not None:
            return cls(regression=False, label_at=label_at)
        raise UnusableOutputs(
            "a classifier needs an integer label output ([rows] or [rows, 1]), a float "
            "probability output [rows, classes], or, when binary, one float score per row "
            f"([rows] or [rows, 1]); found {_describe(samples)}"
        )

    def read(self, outputs: Sequence[np.ndarray], rows: int) -> list[common_pb2.ModelOutput]:
        """One ModelOutput per row from a run's outputs."""
        if self.regression:
            values = outputs[self.value_at].reshape(rows, -1)[:, 0].tolist()
            return [common_pb2.ModelOutput(predicted_value=v) for v in values]
        if self.score_at is not None:
            scores = outputs[self.score_at].reshape(rows).astype(np.float64)
            matrix = np.stack([1.0 - scores, scores], axis=1)
            labels = (outputs[self.label_at].reshape(rows).tolist() if self.label_at is not None
                      else (scores >= self.threshold).astype(np.int64).tolist())
        else:
            matrix = outputs[self.probabilities_at] if self.probabilities_at is not None else None
            if self.label_at is not None:
                labels = outputs[self.label_at].reshape(rows).tolist()
            else:
                labels = matrix.argmax(axis=1).tolist()
        if matrix is None:
            return [common_pb2.ModelOutput(predicted_class=label) for label in labels]
        return [common_pb2.ModelOutput(predicted_class=label, probabilities=p)
                for label, p in zip(labels, matrix.tolist())]


def _describe(samples: Sequence[np.ndarray]) -> str:
    return ", ".join(f"{a.dtype.name}{list(a.shape)}" for a in samples) or "no outputs"
