"""The external-data references of an ONNX model, and the rule every one of them must keep:
a relative path that stays inside the model's folder (no absolute path, no '..').

Used by the loader (before any session exists) and by `flywheel models register` (before
anything is copied into the registry), so the same references are refused at both ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import onnx


def external_locations(model: onnx.ModelProto) -> Iterator[tuple[str, str]]:
    """(tensor name, location) of every tensor stored outside the model file."""
    for tensor in all_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            entries = {e.key: e.value for e in tensor.external_data}
            yield tensor.name, entries.get("location", "")


def escapes(location: str) -> bool:
    """True when `location` is empty, absolute or climbs out of its folder."""
    relative = Path(location)
    return not location or relative.is_absolute() or ".." in relative.parts


def all_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from _node_tensors(node)


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: onnx.NodeProto) -> Iterator[onnx.TensorProto]:
    for attribute in node.attribute:
        if attribute.HasField("t"):
            yield attribute.t
        yield from attribute.tensors
        if attribute.HasField("sparse_tensor"):
            yield attribute.sparse_tensor.values
            yield attribute.sparse_tensor.indices
        if attribute.HasField("g"):
            yield from _graph_tensors(attribute.g)
        for graph in attribute.graphs:
            yield from _graph_tensors(graph)
