"""Binding ONNX inputs to features at registration, and the feeds built from them at serving."""

from __future__ import annotations

import numpy as np
import pytest

from flywheel.inference.bindings import (
    BindingError,
    InputShape,
    bind,
    layout_for,
    parse_mapping,
)
from flywheel.inference.runtime import Signature, TensorSpec
from flywheel.v1 import common_pb2

FEATURES = ["f00", "f01", "segment", "visits"]


def _as_dict(bindings) -> dict[str, list[str]]:
    return {b.input_name: list(b.feature_names) for b in bindings}


def test_one_matrix_of_every_feature_is_the_plain_case_and_stores_no_binding():
    assert bind([InputShape("features", 2, 4)], FEATURES) == []
    assert bind([InputShape("x", 2, None)], FEATURES) == []


def test_inputs_named_after_features_read_them():
    inputs = [InputShape(f, 1 if f != "visits" else 2, None if f != "visits" else 1)
              for f in FEATURES]
    assert _as_dict(bind(inputs, FEATURES)) == {f: [f] for f in FEATURES}


def test_explicit_mappings_bind_several_columns_in_their_order():
    inputs = [InputShape("dense", 2, 3), InputShape("segment", 1, None)]
    mapping = parse_mapping(["dense=visits,f00,f01"])
    assert _as_dict(bind(inputs, FEATURES, mapping)) == {
        "dense": ["visits", "f00", "f01"], "segment": ["segment"]}


def test_a_single_matrix_bound_in_another_order_is_stored():
    bindings = bind([InputShape("x", 2, 2)], ["a", "b"], {"x": ["b", "a"]})
    assert _as_dict(bindings) == {"x": ["b", "a"]}


@pytest.mark.parametrize(("inputs", "mapping", "features", "needle"), [
    ([InputShape("a", 2, 2), InputShape("b", 2, 2)], {}, FEATURES, "read no feature"),
    ([InputShape("x", 2, 3)], {}, FEATURES, "takes 3 columns"),
    ([InputShape("x", 1, None)], {}, FEATURES, "one value per row"),
    ([InputShape("x", 3, None)], {}, FEATURES, "rank 3"),
    ([InputShape("x", 2, 4, "O")], {}, FEATURES, "not numeric"),
    ([InputShape("x", 2, 4)], {"y": ["f00"]}, FEATURES, "not inputs of the model"),
    ([InputShape("x", 2, 1)], {"x": ["nope"]}, FEATURES, "not features of the model"),
    ([InputShape("f00", 1, None)], {}, ["f00", "f01"], "read by no input"),
], ids=["unbound", "width", "flat-many", "rank", "string", "unknown-input", "unknown-feature",
        "unread"])
def test_what_does_not_fit_is_refused_naming_it(inputs, mapping, features, needle):
    with pytest.raises(BindingError) as refused:
        bind(inputs, features, mapping)
    assert needle in str(refused.value)


@pytest.mark.parametrize("item", ["x", "=a", "x=", "x=,"])
def test_malformed_mappings_are_refused(item):
    with pytest.raises(BindingError):
        parse_mapping([item])


def test_a_mapping_given_twice_is_refused():
    with pytest.raises(BindingError, match="twice"):
        parse_mapping(["x=a", "x=b"])


def _meta(features, bindings=()):
    return common_pb2.ModelVersion(
        model_name="m", version=1, feature_names=features,
        inputs=[common_pb2.InputBinding(input_name=n, feature_names=f) for n, f in bindings])


def _signature(*inputs):
    return Signature(tuple(TensorSpec(n, np.dtype(t), s) for n, t, s in inputs),
                     (TensorSpec("score", np.dtype(np.float32), (-1, 1)),))


def test_feeds_take_their_columns_cast_to_each_inputs_type():
    layout = layout_for(
        _meta(FEATURES, [("dense", ["visits", "f00"]), ("segment", ["segment"])]),
        _signature(("dense", np.float32, (-1, 2)), ("segment", np.int64, (-1,))))
    rows = np.array([[0.5, 1.5, 3.0, 7.0], [2.0, -1.0, 1.0, 0.0]])
    feeds = layout.feeds(rows)
    assert feeds["dense"].dtype == np.float32 and feeds["dense"].tolist() == [[7, 0.5], [0, 2]]
    assert feeds["segment"].dtype == np.int64 and feeds["segment"].tolist() == [3, 1]


def test_the_plain_matrix_is_fed_whole():
    layout = layout_for(_meta(["a", "b"]), _signature(("features", np.float64, (-1, 2))))
    rows = np.array([[1.0, 2.0]])
    assert layout.feeds(rows)["features"] is rows  # no copy when the type already fits


@pytest.mark.parametrize(("meta", "signature", "needle"), [
    (_meta(["a", "b"]), _signature(("x", np.float32, (-1, 2)), ("y", np.float32, (-1, 1))),
     "bound to no feature"),
    (_meta(["a", "b"]), _signature(("x", np.float32, (-1, 3))), "takes 3 columns"),
    (_meta(["a"], [("z", ["a"])]), _signature(("x", np.float32, (-1, 1))), "bound to no feature"),
    (_meta(["a"], [("x", ["a"]), ("z", ["a"])]), _signature(("x", np.float32, (-1, 1))),
     "does not have"),
    (_meta(["a"], [("x", ["b"])]), _signature(("x", np.float32, (-1, 1))), "not among"),
], ids=["two-inputs-no-bindings", "width", "input-unbound", "unknown-input", "unknown-feature"])
def test_a_version_whose_bindings_do_not_fit_its_model_is_refused(meta, signature, needle):
    with pytest.raises(BindingError) as refused:
        layout_for(meta, signature)
    assert needle in str(refused.value)
