"""Open Inference Protocol tensors <-> numpy, checked against the model's signature.

Requests are refused (INVALID_ARGUMENT, naming the input) before any run when an input is
missing, unknown or given twice, its datatype or shape differs from the model's, its byte or
element count does not match its shape, the batch is empty, or a float holds NaN or Inf.
Raw inputs are read without copying; the answer uses raw outputs when the request used raw
inputs (as Triton does) and typed contents otherwise.

Every ModelInfer passes here, so the per-signature work is done once: a `Plan` (built on first
use and kept per signature) holds each input's datatype, numpy dtype and expected shape, and
the encoded answer's fixed parts. A raw answer is assembled as bytes from those parts (the
servicer registers ModelInfer without a response serializer): the protobuf encoding of
`ModelInferResponse`, field by field, with only the row counts, the request id and the
output bytes written per call.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from flywheel.common.errors import InvalidArgument, NotFound
from flywheel.common.event_wire import varint
from flywheel.inference.runtime import NUMPY_DTYPES, Signature, TensorSpec
from flywheel.oip import grpc_service_pb2 as oip

# Datatype -> the InferTensorContents field that carries it.
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}

# Up to this many elements a float input is checked by one sum (NaN or Inf anywhere makes it
# non-finite); a non-finite sum, or a larger input, gets the element-wise check.
_SUM_CHECK_MAX = 1024


class DecodedRequest(NamedTuple):
    feeds: dict[str, np.ndarray]
    # Indices into the signature's outputs, in the order the caller asked for them.
    outputs: tuple[int, ...]
    raw: bool


def parse_version(text: str) -> int:
    """'' -> 0 (the champion); a decimal version number; anything else is unknown."""
    if not text:
        return 0
    if not text.isdigit() or int(text) <= 0:
        raise NotFound(f"unknown model version {text!r}", field="model_version")
    return int(text)


# -- protobuf wire pieces (ModelInferResponse, for raw answers) ---------------------------------

def _length_delimited(field: int, payload: bytes) -> bytes:
    """One length-delimited field; empty, it is left out (as protobuf encodes an empty
    string or packed list)."""
    if not payload:
        return b""
    return varint(field << 3 | 2) + varint(len(payload)) + payload


# ModelInferResponse fields: 1 model_name, 2 model_version, 3 id, 5 outputs (InferOutputTensor:
# 1 name, 2 datatype, 3 shape), 6 raw_output_contents.
_RESPONSE_ID = 3
_OUTPUTS_TAG = varint(5 << 3 | 2)
_RAW_OUTPUT_TAG = varint(6 << 3 | 2)


def _little_endian(dtype: np.dtype) -> np.dtype:
    """`dtype` in little-endian order (the wire order of raw contents); numpy hands out its
    built-in dtype objects for these, so an array already in that order is recognized by
    identity."""
    return np.dtype(dtype.str.replace(">", "<").replace("=", "<"))
_OutputTensor = oip.ModelInferResponse.InferOutputTensor


class _InputPlan:
    __slots__ = ("batched", "datatype", "dtype", "floating", "itemsize", "name", "rank",
                 "row_elements", "spec", "tail")

    def __init__(self, spec: TensorSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.datatype = spec.datatype
        self.dtype = spec.dtype.newbyteorder("<")  # the wire order of raw contents
        self.itemsize = spec.dtype.itemsize
        self.floating = spec.dtype.kind == "f"
        self.rank = len(spec.shape)
        self.batched = spec.batched
        # The common signature, a variable first dimension and fixed others: a request's shape
        # is then checked by one comparison of its tail.
        tail = spec.shape[1:]
        if spec.shape and spec.shape[0] == -1 and all(d > 0 for d in tail):
            self.tail: tuple[int, ...] | None = tail
            self.row_elements = math.prod(tail)
        else:
            self.tail = None
            self.row_elements = 0


class Plan:
    """What decoding and encoding need from one signature, computed once."""

    def __init__(self, signature: Signature) -> None:
        self.signature = signature
        self.inputs = {spec.name: _InputPlan(spec) for spec in signature.inputs}
        self.input_count = len(signature.inputs)
        self.all_outputs = tuple(range(len(signature.outputs)))
        self.output_index = {spec.name: i for i, spec in enumerate(signature.outputs)}
        self.output_little = [_little_endian(spec.dtype) for spec in signature.outputs]
        # Per output: the encoded InferOutputTensor's name and datatype fields; its shape
        # follows per answer.
        self._output_head = [
            _length_delimited(1, spec.name.encode()) + _length_delimited(2, spec.datatype.encode())
            for spec in signature.outputs
        ]
        # (model name, version, outputs, output shapes) -> the answer's encoded fields before
        # and after the request id (the raw contents follow); bounded (shapes vary with the
        # row count).
        self._fixed: dict[tuple, tuple[bytes, bytes]] = {}

    def response_fields(
        self, model_name: str, model_version: str, outputs: tuple[int, ...],
        shapes: tuple[tuple[int, ...], ...],
    ) -> tuple[bytes, bytes]:
        """(model_name and model_version fields, outputs fields), encoded."""
        key = (model_name, model_version, outputs, shapes)
        fixed = self._fixed.get(key)
        if fixed is None:
            head = (_length_delimited(1, model_name.encode())
                    + _length_delimited(2, model_version.encode()))
            tensors = []
            for index, shape in zip(outputs, shapes):
                packed = b"".join(varint(d) for d in shape)
                tensor = self._output_head[index] + _length_delimited(3, packed)
                tensors.append(_OUTPUTS_TAG + varint(len(tensor)) + tensor)
            fixed = (head, b"".join(tensors))
            if len(self._fixed) >= 256:
                self._fixed.clear()
            self._fixed[key] = fixed
        return fixed


_PLANS: dict[int, Plan] = {}


def plan_of(signature: Signature) -> Plan:
    """The signature's plan (kept while the signature lives; the cache is bounded)."""
    plan = _PLANS.get(id(signature))
    if plan is None or plan.signature is not signature:
        if len(_PLANS) >= 64:
            _PLANS.clear()
        plan = _PLANS[id(signature)] = Plan(signature)
    return plan


# -- decoding ---------------------------------------------------------------------------------

def decode_request(
    request: oip.ModelInferRequest, signature: Signature, plan: Plan | None = None
) -> DecodedRequest:
    """The request's feeds, checked; `plan`: the signature's (`plan_of`), when the caller
    has it at hand."""
    if plan is None:
        plan = plan_of(signature)
    tensors = request.inputs
    raw_contents = request.raw_input_contents
    count = len(tensors)
    raw = len(raw_contents) > 0
    if raw and len(raw_contents) != count:
        raise InvalidArgument(
            f"raw_input_contents has {len(raw_contents)} entries for {count} inputs",
            field="raw_input_contents",
        )
    feeds: dict[str, np.ndarray] = {}
    rows = -1
    for index in range(count):
        tensor = tensors[index]
        name = tensor.name
        entry = plan.inputs.get(name)
        if entry is None:
            expected = [t.name for t in signature.inputs]
            raise InvalidArgument(
                f"unknown input {name!r}; the model takes {expected}", field="inputs"
            )
        if name in feeds:
            raise InvalidArgument(f"input {name!r} given twice", field="inputs")
        if tensor.datatype != entry.datatype:
            raise InvalidArgument(
                f"input {name!r} has datatype {tensor.datatype or '<none>'}; the model takes "
                f"{entry.datatype}", field=name,
            )
        shape = tuple(tensor.shape)
        if (entry.tail is not None and len(shape) == entry.rank and shape[0] > 0
                and shape[1:] == entry.tail):
            elements = shape[0] * entry.row_elements
        else:
            _check_shape(name, shape, entry.spec)
            elements = math.prod(shape)
        if raw:
            if tensor.HasField("contents"):
                raise InvalidArgument(
                    f"input {name!r} has both contents and raw_input_contents", field="inputs"
                )
            array = _from_raw(name, raw_contents[index], entry, shape, elements)
        else:
            array = _from_contents(tensor, entry.spec, shape, elements)
        if entry.floating and not _all_finite(array, elements):
            raise InvalidArgument(f"input {name!r} holds NaN or Inf", field=name)
        if entry.batched:
            if rows not in (-1, shape[0]):
                raise InvalidArgument("inputs disagree on the batch size", field="inputs")
            rows = shape[0]
        feeds[name] = array
    if len(feeds) != plan.input_count:
        missing = [t.name for t in signature.inputs if t.name not in feeds]
        raise InvalidArgument(f"missing inputs {missing}", field="inputs")
    outputs = _requested_outputs(request, plan) if request.outputs else plan.all_outputs
    return DecodedRequest(feeds, outputs, raw)


def _check_shape(name: str, shape: tuple, spec: TensorSpec) -> None:
    """The request's shape against the model's; the refusal says which part differs."""
    if any(got < 0 for got in shape):
        raise InvalidArgument(
            f"input {name!r} has shape {list(shape)}: a request gives every dimension's size "
            f"(the model's -1 means any size, not a size to send)", field=name)
    if len(shape) != len(spec.shape):
        raise InvalidArgument(
            f"input {name!r} has {len(shape)} dimensions {list(shape)}; the model takes "
            f"{len(spec.shape)}: {list(spec.shape)} (-1: any size)", field=name)
    for axis, (got, want) in enumerate(zip(shape, spec.shape)):
        if want != -1 and got != want:
            raise InvalidArgument(
                f"input {name!r} has shape {list(shape)}: dimension {axis} is {got}, the model "
                f"takes {want} (its shape is {list(spec.shape)}, -1: any size)", field=name)
    if any(d == 0 for d in shape):
        raise InvalidArgument(f"input {name!r} is empty (shape {list(shape)})", field=name)


def _all_finite(array: np.ndarray, elements: int) -> bool:
    if elements <= _SUM_CHECK_MAX and math.isfinite(np.add.reduce(array, axis=None)):
        return True
    # A large input, or a sum that is not finite: an overflow of finite values, or really
    # a NaN or Inf.
    return bool(np.isfinite(array).all())


def _from_raw(name: str, data: bytes, entry: _InputPlan, shape: tuple, count: int) -> np.ndarray:
    if entry.spec.dtype == np.object_:
        raise InvalidArgument(f"input {name!r}: BYTES tensors are not supported", field=name)
    expected = count * entry.itemsize
    if len(data) != expected:
        raise InvalidArgument(
            f"input {name!r}: {len(data)} raw bytes for shape {list(shape)} of "
            f"{entry.datatype} ({expected} expected)", field=name,
        )
    return np.frombuffer(data, dtype=entry.dtype).reshape(shape)


def _from_contents(
    tensor: oip.ModelInferRequest.InferInputTensor, spec: TensorSpec, shape: tuple, count: int
) -> np.ndarray:
    field = CONTENTS_FIELD.get(spec.datatype)
    if field is None:
        raise InvalidArgument(
            f"input {tensor.name!r}: {spec.datatype} must be sent as raw_input_contents",
            field=tensor.name,
        )
    values = getattr(tensor.contents, field)
    if len(values) != count:
        raise InvalidArgument(
            f"input {tensor.name!r}: {len(values)} values in contents.{field} for shape "
            f"{list(shape)} ({count} expected)", field=tensor.name,
        )
    return np.asarray(values, dtype=spec.dtype).reshape(shape)


def _requested_outputs(request: oip.ModelInferRequest, plan: Plan) -> tuple[int, ...]:
    chosen = []
    for wanted in request.outputs:
        index = plan.output_index.get(wanted.name)
        if index is None:
            names = list(plan.output_index)
            raise InvalidArgument(
                f"unknown output {wanted.name!r}; the model has {names}", field="outputs"
            )
        chosen.append(index)
    return tuple(chosen)


# -- encoding ---------------------------------------------------------------------------------

def encode_response(
    request: oip.ModelInferRequest,
    model_version: str,
    signature: Signature,
    decoded: DecodedRequest,
    outputs: Sequence[np.ndarray],
    plan: Plan | None = None,
) -> bytes:
    """The encoded ModelInferResponse: raw outputs for raw inputs, typed contents otherwise."""
    if not decoded.raw:
        return _typed_response(request, model_version, signature, decoded, outputs).SerializeToString()
    if plan is None:
        plan = plan_of(signature)
    chosen = decoded.outputs
    arrays = [outputs[index] for index in chosen]
    head, tensors = plan.response_fields(request.model_name, model_version, chosen,
                                         tuple([array.shape for array in arrays]))
    # Fields in number order, as protobuf writes them.
    request_id = request.id
    parts = [head, _length_delimited(_RESPONSE_ID, request_id.encode()) if request_id else b"",
             tensors]
    little = plan.output_little
    for index, array in zip(chosen, arrays):
        wanted = little[index]
        data = (array if array.dtype is wanted else array.astype(wanted, copy=False)).tobytes()
        size = len(data)
        parts += (_RAW_OUTPUT_TAG, varint(size), data)
    return b"".join(parts)


def _typed_response(
    request: oip.ModelInferRequest,
    model_version: str,
    signature: Signature,
    decoded: DecodedRequest,
    outputs: Sequence[np.ndarray],
) -> oip.ModelInferResponse:
    tensors = []
    for index in decoded.outputs:
        spec = signature.outputs[index]
        array = outputs[index]
        tensor = _OutputTensor(name=spec.name, datatype=spec.datatype, shape=array.shape)
        getattr(tensor.contents, CONTENTS_FIELD[spec.datatype]).extend(array.ravel().tolist())
        tensors.append(tensor)
    return oip.ModelInferResponse(
        model_name=request.model_name, model_version=model_version, id=request.id,
        outputs=tensors,
    )


def tensor_metadata(
    specs: Sequence[TensorSpec],
) -> list[oip.ModelMetadataResponse.TensorMetadata]:
    return [
        oip.ModelMetadataResponse.TensorMetadata(name=s.name, datatype=s.datatype, shape=s.shape)
        for s in specs
    ]


__all__ = [
    "NUMPY_DTYPES",
    "DecodedRequest",
    "Plan",
    "decode_request",
    "encode_response",
    "parse_version",
    "plan_of",
]
