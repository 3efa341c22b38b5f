"""Small ONNX models for tests and benchmarks, made here rather than downloaded.

`logistic_regression_onnx(n_features, seed)` trains a scikit-learn LogisticRegression on
seeded synthetic data and exports it with skl2onnx: input "features" float32 [None, n];
outputs "label" int64 [None] and "probabilities" float32 [None, 2] (zipmap off, so plain
tensors). `flip_byte` makes a corrupt copy of an artifact.
"""

from __future__ import annotations

import numpy as np

INPUT_NAME = "features"


def synthetic_data(n_features: int, n_rows: int = 512, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Rows of N(0, 1) features; label 1 when a fixed random projection is positive."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_rows, n_features))
    weights = rng.normal(size=n_features)
    y = (x @ weights + rng.normal(scale=0.5, size=n_rows) > 0).astype(np.int64)
    return x, y


def logistic_regression_onnx(n_features: int, seed: int = 7, n_rows: int = 512) -> bytes:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression

    x, y = synthetic_data(n_features, n_rows, seed)
    classifier = LogisticRegression(max_iter=200).fit(x, y)
    model = to_onnx(
        classifier,
        initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
        options={id(classifier): {"zipmap": False}},
    )
    return model.SerializeToString()


def flip_byte(data: bytes, position: int | None = None) -> bytes:
    """The same artifact with one byte inverted (default: the middle one)."""
    index = len(data) // 2 if position is None else position
    return data[:index] + bytes([data[index] ^ 0xFF]) + data[index + 1:]


def feature_names(n_features: int) -> list[str]:
    """f00, f01, ...: the spec's naming."""
    return [f"f{i:02d}" for i in range(n_features)]
