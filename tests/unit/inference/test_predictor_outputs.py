"""Session outputs -> ModelOutput per row, and the prediction ids."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from flywheel.inference.predictor import model_outputs, uuid4_hex
from flywheel.inference.runtime import Signature, TensorSpec
from flywheel.v1 import common_pb2

CLASSIFICATION = common_pb2.MODEL_TASK_BINARY_CLASSIFICATION
REGRESSION = common_pb2.MODEL_TASK_REGRESSION
FEATURES = (TensorSpec("features", np.dtype(np.float32), (-1, 3)),)


def _signature(*outputs: tuple[str, type, tuple[int, ...]]) -> Signature:
    return Signature(FEATURES, tuple(TensorSpec(n, np.dtype(t), s) for n, t, s in outputs))


def test_classifier_rows_get_their_label_and_probabilities():
    signature = _signature(("label", np.int64, (-1,)), ("probabilities", np.float32, (-1, 2)))
    probabilities = np.array([[0.25, 0.75], [0.5, 0.5], [1.0, 0.0]], dtype=np.float32)
    outputs = model_outputs(CLASSIFICATION, signature,
                            [np.array([1, 0, 0], dtype=np.int64), probabilities], 3)
    assert [o.predicted_class for o in outputs] == [1, 0, 0]
    assert [list(o.probabilities) for o in outputs] == probabilities.tolist()
    assert all(isinstance(o, common_pb2.ModelOutput) for o in outputs)


def test_label_after_the_probabilities_in_the_signature_is_still_the_label():
    signature = _signature(("probabilities", np.float32, (-1, 2)), ("label", np.int64, (-1, 1)))
    outputs = model_outputs(CLASSIFICATION, signature,
                            [np.array([[0.9, 0.1], [0.2, 0.8]], dtype=np.float32),
                             np.array([[0], [1]], dtype=np.int64)], 2)
    assert [o.predicted_class for o in outputs] == [0, 1]
    assert list(outputs[1].probabilities) == pytest.approx([0.2, 0.8])


def test_probabilities_without_a_label_take_the_most_likely_class():
    signature = _signature(("probabilities", np.float32, (-1, 3)))
    outputs = model_outputs(CLASSIFICATION, signature,
                            [np.array([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1]], dtype=np.float32)], 2)
    assert [o.predicted_class for o in outputs] == [1, 0]


def test_regression_answers_the_first_float_output_per_row():
    signature = _signature(("value", np.float32, (-1, 1)))
    outputs = model_outputs(REGRESSION, signature, [np.array([[1.5], [-2.0]], dtype=np.float32)], 2)
    assert [o.predicted_value for o in outputs] == [1.5, -2.0]


def test_an_unspecified_task_without_a_label_is_a_regression():
    signature = _signature(("value", np.float64, (-1,)))
    outputs = model_outputs(0, signature, [np.array([3.25, 4.0])], 2)
    assert [o.predicted_value for o in outputs] == [3.25, 4.0]


def test_prediction_ids_are_random_version_4_uuids():
    ids = {uuid4_hex() for _ in range(1000)}
    assert len(ids) == 1000
    for text in list(ids)[:50]:
        assert len(text) == 32 and text == text.lower()
        parsed = uuid.UUID(hex=text)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        assert parsed.hex == text
