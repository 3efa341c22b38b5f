"""The gate's metrics, two classes and more, and regression: figures worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flywheel.common.errors import InvalidArgument
from flywheel.training.gate import metric

Y2 = np.array([0, 0, 1, 1])
P2 = np.array([[0.9, 0.1], [0.4, 0.6], [0.35, 0.65], [0.2, 0.8]])


def test_two_classes():
    predicted = P2.argmax(axis=1)  # 0, 1, 1, 1
    assert metric("accuracy", Y2, predicted) == 0.75
    assert metric("f1", Y2, predicted) == pytest.approx(0.8)  # tp 2, fp 1, fn 0
    # Positives score 0.65 and 0.8; negatives 0.1 and 0.6: every pair ranked right.
    assert metric("roc_auc", Y2, predicted, P2) == 1.0
    expected = -np.mean(np.log([0.9, 0.4, 0.65, 0.8]))
    assert metric("log_loss", Y2, predicted, P2) == pytest.approx(expected)


def test_three_classes():
    y = np.array([0, 1, 2, 2])
    probabilities = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.3, 0.6],
                              [0.3, 0.4, 0.3]])
    predicted = probabilities.argmax(axis=1)  # 0, 1, 2, 1
    assert metric("accuracy", y, predicted) == 0.75
    # Per class f1: 1, 2/3, 2/3 -> macro 7/9.
    assert metric("f1", y, predicted) == pytest.approx(7 / 9)
    expected = -np.mean(np.log([0.7, 0.5, 0.6, 0.3]))
    assert metric("log_loss", y, predicted, probabilities) == pytest.approx(expected)
    auc = metric("roc_auc", y, predicted, probabilities)
    assert 0.5 < auc <= 1.0


def test_undefined_and_refused():
    assert math.isnan(metric("roc_auc", np.array([1, 1]), np.array([1, 1]),
                             np.array([[0.2, 0.8], [0.3, 0.7]])))
    assert math.isnan(metric("accuracy", np.array([]), np.array([])))
    with pytest.raises(InvalidArgument):
        metric("log_loss", Y2, Y2)
    with pytest.raises(InvalidArgument):
        metric("nope", Y2, Y2)


def test_regression():
    y, predicted = np.array([1.0, 2.0, 3.0]), np.array([1.5, 2.0, 1.0])
    assert metric("mae", y, predicted) == pytest.approx(2.5 / 3)
    assert metric("rmse", y, predicted) == pytest.approx(math.sqrt((0.25 + 4) / 3))
