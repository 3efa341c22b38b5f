"""Small ONNX models for tests and benchmarks, made here rather than downloaded.

`logistic_regression_onnx(n_features, seed)` trains a scikit-learn LogisticRegression on
seeded synthetic data and exports it with skl2onnx: input "features" float32 [None, n];
outputs "label" int64 [None] and "probabilities" float32 [None, 2] (zipmap off, so plain
tensors). `mlp_onnx(n_features, hidden, layers, seed)` builds a seeded multilayer perceptron
with the same input and outputs, heavy enough per row for an accelerator to matter.
`scored_onnx(inputs, weights, bias, head)` builds a model a user might bring: several inputs
of any numeric type and rank ([rows] or [rows, k]), their columns joined in order into one
linear score p = sigmoid(x @ weights + bias), answered as one score per row ([rows, 1] or
[rows]) or as "label" and "probabilities"; `scored_reference` computes the same p in numpy;
`save_with_external_weights` stores its weights as external data.
`flip_byte` makes a corrupt copy of an artifact.
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


def mlp_onnx(n_features: int, hidden: int = 256, layers: int = 3, seed: int = 7) -> bytes:
    """`layers` hidden Gemm+Relu layers of `hidden` units, then two classes: "label" (ArgMax)
    and "probabilities" (Softmax), as the logistic regression answers. Weights are seeded
    random, scaled so activations stay of order one."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, weights = [], []
    current, width = INPUT_NAME, n_features

    def dense(name: str, source: str, units: int) -> str:
        w = (rng.normal(size=(width, units)) / np.sqrt(width)).astype(np.float32)
        weights.append(numpy_helper.from_array(w, f"{name}_w"))
        weights.append(numpy_helper.from_array(np.zeros(units, np.float32), f"{name}_b"))
        nodes.append(helper.make_node("Gemm", [source, f"{name}_w", f"{name}_b"], [name]))
        return name

    for layer in range(layers):
        out = dense(f"dense{layer}", current, hidden)
        nodes.append(helper.make_node("Relu", [out], [f"relu{layer}"]))
        current, width = f"relu{layer}", hidden
    logits = dense("logits", current, 2)
    nodes.append(helper.make_node("Softmax", [logits], ["probabilities"], axis=1))
    nodes.append(helper.make_node("ArgMax", [logits], ["label"], axis=1, keepdims=0))
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [None, n_features])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2])],
        weights,
    )
    # IR 9 / opset 17: read by every ONNX Runtime the extras pin (CPU and CUDA builds).
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model.SerializeToString()


# scored_onnx heads: the score as [rows, 1], the score as [rows], or label + probabilities.
SCORE_COLUMN, SCORE_FLAT, CLASSES = "score", "score_flat", "classes"


def scored_onnx(
    inputs: list[tuple[str, tuple[int | None, ...], int]], weights: list[float], bias: float = 0.0,
    head: str = SCORE_COLUMN,
):
    """An onnx.ModelProto (see the module docstring). `inputs`: (name, shape, onnx element
    type) each, shape (None,) or (None, k); `weights`: one per column, all inputs joined."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, parts = [], []
    initializers = [
        numpy_helper.from_array(np.asarray(weights, np.float32).reshape(-1, 1), "scored_w"),
        numpy_helper.from_array(np.asarray([bias], np.float32), "scored_b"),
        numpy_helper.from_array(np.asarray([1], np.int64), "scored_axis1"),
    ]
    for name, shape, elem_type in inputs:
        current = name
        if elem_type != TensorProto.FLOAT:
            nodes.append(helper.make_node("Cast", [current], [f"{name}_f"], to=TensorProto.FLOAT))
            current = f"{name}_f"
        if len(shape) == 1:
            nodes.append(helper.make_node("Unsqueeze", [current, "scored_axis1"], [f"{name}_2d"]))
            current = f"{name}_2d"
        parts.append(current)
    joined = parts[0]
    if len(parts) > 1:
        nodes.append(helper.make_node("Concat", parts, ["joined"], axis=1))
        joined = "joined"
    nodes += [helper.make_node("MatMul", [joined, "scored_w"], ["logit0"]),
              helper.make_node("Add", ["logit0", "scored_b"], ["logit"]),
              helper.make_node("Sigmoid", ["logit"], ["p"])]
    if head == SCORE_COLUMN:
        nodes.append(helper.make_node("Identity", ["p"], ["score"]))
        outputs = [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None, 1])]
    elif head == SCORE_FLAT:
        nodes.append(helper.make_node("Squeeze", ["p", "scored_axis1"], ["score"]))
        outputs = [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None])]
    else:
        initializers.append(numpy_helper.from_array(np.asarray([0.5], np.float32), "scored_half"))
        initializers.append(numpy_helper.from_array(np.asarray([1.0], np.float32), "scored_one"))
        nodes += [helper.make_node("Sub", ["scored_one", "p"], ["q"]),
                  helper.make_node("Concat", ["q", "p"], ["probabilities"], axis=1),
                  helper.make_node("GreaterOrEqual", ["p", "scored_half"], ["positive"]),
                  helper.make_node("Cast", ["positive"], ["label2d"], to=TensorProto.INT64),
                  helper.make_node("Squeeze", ["label2d", "scored_axis1"], ["label"])]
        outputs = [helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
                   helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2])]
    graph = helper.make_graph(
        nodes, "scored",
        [helper.make_tensor_value_info(name, elem_type, list(shape))
         for name, shape, elem_type in inputs],
        outputs, initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def scored_reference(columns: np.ndarray, weights: list[float], bias: float = 0.0) -> np.ndarray:
    """p per row of `columns` (every input's columns joined, in order), as scored_onnx does."""
    logit = columns.astype(np.float32) @ np.asarray(weights, np.float32) + np.float32(bias)
    return 1.0 / (1.0 + np.exp(-logit))


def save_with_external_weights(model, path, location: str, tensor: str = "scored_w") -> None:
    """Writes `model` to `path` with `tensor`'s data in the file `location` names (relative to
    the model's folder; the data is written only where that stays inside the folder, so a
    reference that escapes it can be made too). The small constants (axes) stay inline: ONNX
    Runtime's shape inference reads those from the model itself."""
    from pathlib import Path

    from onnx.external_data_helper import set_external_data

    path = Path(path)
    model = model.__class__.FromString(model.SerializeToString())
    weights = next(t for t in model.graph.initializer if t.name == tensor)
    data = weights.raw_data
    target = path.parent / location
    if not Path(location).is_absolute() and ".." not in Path(location).parts:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    set_external_data(weights, location=location, offset=0, length=len(data))
    weights.ClearField("raw_data")
    path.write_bytes(model.SerializeToString())


def flip_byte(data: bytes, position: int | None = None) -> bytes:
    """The same artifact with one byte inverted (default: the middle one)."""
    index = len(data) // 2 if position is None else position
    return data[:index] + bytes([data[index] ^ 0xFF]) + data[index + 1:]


def feature_names(n_features: int) -> list[str]:
    """f00, f01, ...: the spec's naming."""
    return [f"f{i:02d}" for i in range(n_features)]
