"""Which features each ONNX input of a model reads, and the feeds of one run built from them.

A version's `feature_names` is the row the mesh reads from the store and logs; its `inputs`
(ModelVersion.inputs) say which of those columns each ONNX input takes, in its own column
order. No bindings is the plain case: one matrix input [rows, len(feature_names)] reading
every feature in order.

At registration (`bind`), an input given an explicit mapping reads those features; an input
not mapped whose name is one of the features reads that feature alone; a model with a single
input, neither mapped nor named after a feature, reads every feature in order. Anything else
(an input left unbound, a feature no input reads) is refused with the names at fault. An
input reading one feature may be [rows] or [rows, 1]; one reading k features is [rows, k].
Inputs are fed float, integer or bool tensors (the row's numbers cast to the input's type);
string inputs are not fed: string features reach a model as their vocabulary codes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from flywheel.inference.runtime import Signature
from flywheel.v1 import common_pb2


class BindingError(ValueError):
    """The model's inputs and the features cannot be matched; the message names them."""


@dataclass(frozen=True)
class InputShape:
    """What binding needs of one ONNX input: its name, rank, column count (None: open) and
    numpy dtype kind."""

    name: str
    rank: int
    columns: int | None
    kind: str = "f"


def check_input(shape: InputShape, features: Sequence[str]) -> None:
    """Raises BindingError unless `shape` can take `features` as its columns."""
    if shape.kind not in "fiub":
        raise BindingError(f"input {shape.name!r} is not numeric; string features reach a model "
                           "as their vocabulary codes (numbers)")
    if not features:
        raise BindingError(f"input {shape.name!r} reads no features")
    if shape.rank == 1:
        if len(features) != 1:
            raise BindingError(f"input {shape.name!r} is one value per row [rows] but is bound "
                               f"to {len(features)} features {list(features)}")
        return
    if shape.rank != 2:
        raise BindingError(f"input {shape.name!r} has rank {shape.rank}; an input is [rows] or "
                           "[rows, features]")
    if shape.columns is not None and shape.columns != len(features):
        raise BindingError(f"input {shape.name!r} takes {shape.columns} columns but is bound to "
                           f"{len(features)} features {list(features)}")


def bind(
    inputs: Sequence[InputShape], features: Sequence[str],
    explicit: Mapping[str, Sequence[str]] | None = None,
) -> list[common_pb2.InputBinding]:
    """The bindings to store for a model with `inputs` reading `features` (empty: the plain
    single matrix). Raises BindingError naming what does not fit."""
    explicit = dict(explicit or {})
    names = [i.name for i in inputs]
    unknown = sorted(set(explicit) - set(names))
    if unknown:
        raise BindingError(f"--input names {unknown} are not inputs of the model (it has {names})")
    known = set(features)
    bound: dict[str, list[str]] = {}
    for shape in inputs:
        if shape.name in explicit:
            columns = list(explicit[shape.name])
            stray = [f for f in columns if f not in known]
            if stray:
                raise BindingError(f"input {shape.name!r} is mapped to {stray}, which are not "
                                   f"features of the model ({list(features)})")
            bound[shape.name] = columns
        elif shape.name in known:
            bound[shape.name] = [shape.name]
    unbound = [s for s in inputs if s.name not in bound]
    if len(inputs) == 1 and unbound:
        bound[unbound[0].name] = list(features)
        unbound = []
    if unbound:
        raise BindingError(
            f"inputs {[s.name for s in unbound]} read no feature: map each with "
            "--input NAME=FEATURE[,FEATURE...] (an input named after a feature reads it)")
    read = {f for columns in bound.values() for f in columns}
    unread = [f for f in features if f not in read]
    if unread:
        raise BindingError(f"features {unread} are read by no input of the model")
    for shape in inputs:
        check_input(shape, bound[shape.name])
    if len(inputs) == 1 and inputs[0].rank == 2 and bound[inputs[0].name] == list(features):
        return []  # the plain case: no bindings stored
    return [common_pb2.InputBinding(input_name=s.name, feature_names=bound[s.name])
            for s in inputs]


def parse_mapping(items: Sequence[str]) -> dict[str, list[str]]:
    """`NAME=f1,f2` strings (the --input option) -> input name -> features."""
    out: dict[str, list[str]] = {}
    for item in items:
        name, sep, rest = item.partition("=")
        columns = [c.strip() for c in rest.split(",") if c.strip()]
        if not sep or not name.strip() or not columns:
            raise BindingError(f"--input {item!r}: expected NAME=FEATURE[,FEATURE...]")
        if name.strip() in out:
            raise BindingError(f"--input {name.strip()!r} is given twice")
        out[name.strip()] = columns
    return out


# -- serving ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Feed:
    name: str
    dtype: np.dtype
    columns: tuple[int, ...]
    flat: bool  # a [rows] input


class FeedLayout:
    """Builds one run's feeds from the rows (features in the version's order)."""

    def __init__(self, feeds: Sequence[_Feed], width: int) -> None:
        self._feeds = tuple(feeds)
        self.input_names = tuple(f.name for f in feeds)
        whole = tuple(range(width))
        single = self._feeds[0] if len(self._feeds) == 1 else None
        if single is not None and single.columns == whole and not single.flat:
            # The plain matrix: no column selection, no copy beyond the cast.
            self.feeds = lambda matrix: {single.name: matrix.astype(single.dtype, copy=False)}
        else:
            self.feeds = self._select

    def _select(self, matrix: np.ndarray) -> dict[str, np.ndarray]:
        out = {}
        for feed in self._feeds:
            part = matrix[:, feed.columns].astype(feed.dtype, copy=False)
            out[feed.name] = part.reshape(-1) if feed.flat else part
        return out


def layout_for(meta: common_pb2.ModelVersion, signature: Signature) -> FeedLayout:
    """The feeds of `meta`'s bindings on this session's inputs; BindingError when they do not
    fit (an input unbound or unknown, a width that differs, a feature not in the version)."""
    features = list(meta.feature_names)
    index = {name: i for i, name in enumerate(features)}
    specs = {spec.name: spec for spec in signature.inputs}
    bindings = list(meta.inputs) or (
        [common_pb2.InputBinding(input_name=signature.inputs[0].name, feature_names=features)]
        if len(signature.inputs) == 1 else [])
    bound = [b.input_name for b in bindings]
    missing = [name for name in specs if name not in bound]
    if missing:
        raise BindingError(f"inputs {missing} are bound to no feature (the model has "
                           f"{len(specs)} inputs; its version binds {bound or 'none'})")
    feeds = []
    for binding in bindings:
        spec = specs.get(binding.input_name)
        if spec is None:
            raise BindingError(f"the version binds input {binding.input_name!r}, which the "
                               f"model does not have ({list(specs)})")
        stray = [f for f in binding.feature_names if f not in index]
        if stray:
            raise BindingError(f"input {spec.name!r} reads {stray}, not among the version's "
                               "feature names")
        columns = spec.shape[1] if len(spec.shape) == 2 and spec.shape[1] >= 0 else None
        check_input(InputShape(spec.name, len(spec.shape), columns, spec.dtype.kind),
                    binding.feature_names)
        feeds.append(_Feed(spec.name, spec.dtype,
                           tuple(index[f] for f in binding.feature_names), len(spec.shape) == 1))
    return FeedLayout(feeds, len(features))
