"""Open Inference Protocol tensors <-> numpy, checked against the model's signature.

Requests are refused (INVALID_ARGUMENT, naming the input) before any run when an input is
missing, unknown or given twice, its datatype or shape differs from the model's, its byte or
element count does not match its shape, the batch is empty, or a float holds NaN or Inf.
Raw inputs are read without copying; the answer uses raw outputs when the request used raw
inputs (as Triton does) and typed contents otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from flywheel.common.errors import InvalidArgument, NotFound
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


@dataclass(frozen=True)
class DecodedRequest:
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


def decode_request(request: oip.ModelInferRequest, signature: Signature) -> DecodedRequest:
    raw_contents = request.raw_input_contents
    raw = len(raw_contents) > 0
    if raw and len(raw_contents) != len(request.inputs):
        raise InvalidArgument(
            f"raw_input_contents has {len(raw_contents)} entries for {len(request.inputs)} "
            "inputs", field="raw_input_contents",
        )
    feeds: dict[str, np.ndarray] = {}
    rows = -1
    for index, tensor in enumerate(request.inputs):
        spec = signature.input(tensor.name)
        if spec is None:
            expected = [t.name for t in signature.inputs]
            raise InvalidArgument(
                f"unknown input {tensor.name!r}; the model takes {expected}", field="inputs"
            )
        if tensor.name in feeds:
            raise InvalidArgument(f"input {tensor.name!r} given twice", field="inputs")
        shape = _check_shape(tensor, spec)
        if raw:
            if tensor.HasField("contents"):
                raise InvalidArgument(
                    f"input {tensor.name!r} has both contents and raw_input_contents",
                    field="inputs",
                )
            array = _from_raw(tensor.name, raw_contents[index], spec, shape)
        else:
            array = _from_contents(tensor, spec, shape)
        if spec.dtype.kind == "f" and not np.isfinite(array).all():
            raise InvalidArgument(f"input {tensor.name!r} holds NaN or Inf", field=tensor.name)
        if spec.batched:
            if rows not in (-1, shape[0]):
                raise InvalidArgument("inputs disagree on the batch size", field="inputs")
            rows = shape[0]
        feeds[tensor.name] = array
    if len(feeds) != len(signature.inputs):
        missing = [t.name for t in signature.inputs if t.name not in feeds]
        raise InvalidArgument(f"missing inputs {missing}", field="inputs")
    return DecodedRequest(feeds, _requested_outputs(request, signature), raw)


def _check_shape(tensor: oip.ModelInferRequest.InferInputTensor, spec: TensorSpec) -> tuple:
    if tensor.datatype != spec.datatype:
        raise InvalidArgument(
            f"input {tensor.name!r} has datatype {tensor.datatype or '<none>'}; the model takes "
            f"{spec.datatype}", field=tensor.name,
        )
    shape = tuple(tensor.shape)
    if len(shape) != len(spec.shape) or any(
        got < 0 or (want != -1 and got != want) for got, want in zip(shape, spec.shape)
    ):
        raise InvalidArgument(
            f"input {tensor.name!r} has shape {list(shape)}; the model takes {list(spec.shape)} "
            "(-1: any size)", field=tensor.name,
        )
    if any(d == 0 for d in shape):
        raise InvalidArgument(f"input {tensor.name!r} is empty (shape {list(shape)})",
                              field=tensor.name)
    return shape


def _from_raw(name: str, data: bytes, spec: TensorSpec, shape: tuple) -> np.ndarray:
    if spec.dtype == np.object_:
        raise InvalidArgument(f"input {name!r}: BYTES tensors are not supported", field=name)
    count = math.prod(shape)
    expected = count * spec.dtype.itemsize
    if len(data) != expected:
        raise InvalidArgument(
            f"input {name!r}: {len(data)} raw bytes for shape {list(shape)} of "
            f"{spec.datatype} ({expected} expected)", field=name,
        )
    return np.frombuffer(data, dtype=_little_endian(spec.dtype)).reshape(shape)


def _from_contents(
    tensor: oip.ModelInferRequest.InferInputTensor, spec: TensorSpec, shape: tuple
) -> np.ndarray:
    field = CONTENTS_FIELD.get(spec.datatype)
    if field is None:
        raise InvalidArgument(
            f"input {tensor.name!r}: {spec.datatype} must be sent as raw_input_contents",
            field=tensor.name,
        )
    values = getattr(tensor.contents, field)
    count = math.prod(shape)
    if len(values) != count:
        raise InvalidArgument(
            f"input {tensor.name!r}: {len(values)} values in contents.{field} for shape "
            f"{list(shape)} ({count} expected)", field=tensor.name,
        )
    return np.asarray(values, dtype=spec.dtype).reshape(shape)


def _requested_outputs(request: oip.ModelInferRequest, signature: Signature) -> tuple[int, ...]:
    if not request.outputs:
        return tuple(range(len(signature.outputs)))
    names = [t.name for t in signature.outputs]
    chosen = []
    for wanted in request.outputs:
        if wanted.name not in names:
            raise InvalidArgument(
                f"unknown output {wanted.name!r}; the model has {names}", field="outputs"
            )
        chosen.append(names.index(wanted.name))
    return tuple(chosen)


_LITTLE_ENDIAN: dict[np.dtype, np.dtype] = {}


def _little_endian(dtype: np.dtype) -> np.dtype:
    """The little-endian form of `dtype` (the wire order of raw contents), memoized."""
    little = _LITTLE_ENDIAN.get(dtype)
    if little is None:
        little = _LITTLE_ENDIAN[dtype] = dtype.newbyteorder("<")
    return little


def encode_response(
    request: oip.ModelInferRequest,
    model_version: str,
    signature: Signature,
    decoded: DecodedRequest,
    outputs: Sequence[np.ndarray],
) -> oip.ModelInferResponse:
    tensors = []
    raw_contents = []
    for index in decoded.outputs:
        spec = signature.outputs[index]
        array = outputs[index]
        if decoded.raw:
            tensors.append(_OutputTensor(name=spec.name, datatype=spec.datatype, shape=array.shape))
            little = _little_endian(spec.dtype)
            raw_contents.append((array if array.dtype == little else array.astype(little)).tobytes())
        else:
            tensor = _OutputTensor(name=spec.name, datatype=spec.datatype, shape=array.shape)
            getattr(tensor.contents, CONTENTS_FIELD[spec.datatype]).extend(array.ravel().tolist())
            tensors.append(tensor)
    return oip.ModelInferResponse(
        model_name=request.model_name, model_version=model_version, id=request.id,
        outputs=tensors, raw_output_contents=raw_contents,
    )


_OutputTensor = oip.ModelInferResponse.InferOutputTensor


def tensor_metadata(
    specs: Sequence[TensorSpec],
) -> list[oip.ModelMetadataResponse.TensorMetadata]:
    return [
        oip.ModelMetadataResponse.TensorMetadata(name=s.name, datatype=s.datatype, shape=s.shape)
        for s in specs
    ]


__all__ = ["DecodedRequest", "NUMPY_DTYPES", "decode_request", "encode_response", "parse_version"]
