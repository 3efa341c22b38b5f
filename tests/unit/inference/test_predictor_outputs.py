"""Session outputs -> ModelOutput per row (the output rule), and the prediction ids."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from flywheel.inference.outputs import OutputRule, UnusableOutputs
from flywheel.inference.predictor import uuid4_hex
from flywheel.v1 import common_pb2

CLASSIFICATION = common_pb2.MODEL_TASK_BINARY_CLASSIFICATION
MULTICLASS = common_pb2.MODEL_TASK_MULTICLASS_CLASSIFICATION
REGRESSION = common_pb2.MODEL_TASK_REGRESSION


def read(task: int, outputs: list[np.ndarray], threshold: float = 0.0):
    rows = outputs[0].shape[0]
    return OutputRule.of(task, outputs, threshold).read(outputs, rows)


def test_classifier_rows_get_their_label_and_probabilities():
    probabilities = np.array([[0.25, 0.75], [0.5, 0.5], [1.0, 0.0]], dtype=np.float32)
    outputs = read(CLASSIFICATION, [np.array([1, 0, 0], dtype=np.int64), probabilities])
    assert [o.predicted_class for o in outputs] == [1, 0, 0]
    assert [list(o.probabilities) for o in outputs] == probabilities.tolist()
    assert all(isinstance(o, common_pb2.ModelOutput) for o in outputs)


def test_label_after_the_probabilities_in_the_signature_is_still_the_label():
    outputs = read(CLASSIFICATION, [np.array([[0.9, 0.1], [0.2, 0.8]], dtype=np.float32),
                                    np.array([[0], [1]], dtype=np.int64)])
    assert [o.predicted_class for o in outputs] == [0, 1]
    assert list(outputs[1].probabilities) == pytest.approx([0.2, 0.8])


def test_probabilities_without_a_label_take_the_most_likely_class():
    outputs = read(MULTICLASS, [np.array([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1]], dtype=np.float32)])
    assert [o.predicted_class for o in outputs] == [1, 0]


@pytest.mark.parametrize("shape", [(4,), (4, 1)], ids=["N", "N,1"])
def test_a_binary_score_is_the_positive_probability_cut_at_one_half(shape):
    scores = np.array([0.1, 0.5, 0.49, 0.97], dtype=np.float32).reshape(shape)
    outputs = read(CLASSIFICATION, [scores])
    assert [o.predicted_class for o in outputs] == [0, 1, 0, 1]  # 0.5 itself is positive
    for o, p in zip(outputs, scores.ravel().tolist()):
        assert list(o.probabilities) == pytest.approx([1 - p, p])


def test_the_registered_threshold_moves_the_cut():
    scores = np.array([[0.2], [0.35], [0.8]], dtype=np.float64)
    outputs = read(CLASSIFICATION, [scores], threshold=0.3)
    assert [o.predicted_class for o in outputs] == [0, 1, 1]


def test_a_score_beside_a_label_keeps_the_models_label():
    outputs = read(CLASSIFICATION, [np.array([0.9, 0.2], dtype=np.float32),
                                    np.array([0, 0], dtype=np.int64)])
    assert [o.predicted_class for o in outputs] == [0, 0]
    assert list(outputs[0].probabilities) == pytest.approx([0.1, 0.9])


def test_a_probability_matrix_wins_over_a_score():
    outputs = read(CLASSIFICATION, [np.array([0.9, 0.2], dtype=np.float32),
                                    np.array([[0.3, 0.7], [0.6, 0.4]], dtype=np.float32)])
    assert [o.predicted_class for o in outputs] == [1, 0]
    assert list(outputs[0].probabilities) == pytest.approx([0.3, 0.7])


def test_a_label_alone_gives_the_class_without_probabilities():
    outputs = read(MULTICLASS, [np.array([2, 0], dtype=np.int64)])
    assert [o.predicted_class for o in outputs] == [2, 0]
    assert not outputs[0].probabilities


@pytest.mark.parametrize(("task", "outputs"), [
    (MULTICLASS, [np.array([0.2, 0.4], dtype=np.float32)]),  # a score, but not binary
    (CLASSIFICATION, [np.zeros((2, 3, 2), dtype=np.float32)]),  # no usable shape
    (REGRESSION, [np.array([1, 2], dtype=np.int64)]),  # no float output
], ids=["multiclass-score", "rank-3", "regression-without-floats"])
def test_outputs_that_fit_no_rule_are_refused_with_what_was_expected(task, outputs):
    with pytest.raises(UnusableOutputs) as refused:
        OutputRule.of(task, outputs)
    assert "output" in str(refused.value)


def test_regression_answers_the_first_float_output_per_row():
    outputs = read(REGRESSION, [np.array([[1.5], [-2.0]], dtype=np.float32)])
    assert [o.predicted_value for o in outputs] == [1.5, -2.0]


def test_an_unspecified_task_without_a_label_is_a_regression():
    outputs = read(0, [np.array([3.25, 4.0])])
    assert [o.predicted_value for o in outputs] == [3.25, 4.0]


def test_prediction_ids_are_random_version_4_uuids():
    ids = {uuid4_hex() for _ in range(1000)}
    assert len(ids) == 1000
    for text in list(ids)[:50]:
        assert len(text) == 32 and text == text.lower()
        parsed = uuid.UUID(hex=text)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        assert parsed.hex == text
