"""ONNX Runtime sessions: providers and threads from settings, the model's signature, runs.

The signature is read once per session; everything else (request validation, metadata
answers) works from it, never from the session again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

log = logging.getLogger("flywheel.inference.runtime")

# ONNX Runtime type string -> numpy dtype.
_ORT_TYPES: dict[str, np.dtype] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(double)": np.dtype(np.float64),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(int16)": np.dtype(np.int16),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(uint16)": np.dtype(np.uint16),
    "tensor(uint32)": np.dtype(np.uint32),
    "tensor(uint64)": np.dtype(np.uint64),
    "tensor(bool)": np.dtype(np.bool_),
    "tensor(string)": np.dtype(np.object_),
}

# numpy dtype -> Open Inference Protocol datatype name, and back.
OIP_DATATYPES: dict[np.dtype, str] = {
    np.dtype(np.bool_): "BOOL",
    np.dtype(np.uint8): "UINT8",
    np.dtype(np.uint16): "UINT16",
    np.dtype(np.uint32): "UINT32",
    np.dtype(np.uint64): "UINT64",
    np.dtype(np.int8): "INT8",
    np.dtype(np.int16): "INT16",
    np.dtype(np.int32): "INT32",
    np.dtype(np.int64): "INT64",
    np.dtype(np.float16): "FP16",
    np.dtype(np.float32): "FP32",
    np.dtype(np.float64): "FP64",
    np.dtype(np.object_): "BYTES",
}
NUMPY_DTYPES: dict[str, np.dtype] = {name: dtype for dtype, name in OIP_DATATYPES.items()}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: np.dtype
    # -1 marks a variable dimension.
    shape: tuple[int, ...]

    @property
    def datatype(self) -> str:
        return OIP_DATATYPES[self.dtype]

    @property
    def batched(self) -> bool:
        """The first dimension is variable: rows of several requests can be stacked."""
        return bool(self.shape) and self.shape[0] == -1


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def batchable(self) -> bool:
        return all(t.batched for t in self.inputs) and all(t.batched for t in self.outputs)

    def input(self, name: str) -> TensorSpec | None:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        return None

    def output(self, name: str) -> TensorSpec | None:
        for spec in self.outputs:
            if spec.name == name:
                return spec
        return None


class UnsupportedModel(ValueError):
    """The graph uses a type the server cannot carry (sequences, maps, ...)."""


def _tensor_spec(arg: ort.NodeArg) -> TensorSpec:
    dtype = _ORT_TYPES.get(arg.type)
    if dtype is None:
        raise UnsupportedModel(
            f"{arg.name!r} has type {arg.type}; only tensors are served "
            "(export classifiers with zipmap=False)"
        )
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or ()))
    return TensorSpec(arg.name, dtype, shape)


def choose_providers(preferred: Sequence[str]) -> list[str]:
    """The preferred providers this build has, in order, ending with the CPU provider."""
    available = set(ort.get_available_providers())
    chosen = [p for p in preferred if p in available and p != "CPUExecutionProvider"]
    return [*chosen, "CPUExecutionProvider"]


class Session:
    """One InferenceSession and its signature."""

    def __init__(
        self,
        model: bytes | str,
        *,
        providers: Sequence[str],
        intra_op_threads: int = 1,
        inter_op_threads: int = 1,
    ) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = inter_op_threads
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Tiny request-sized runs: spinning worker threads would only steal the cores that
        # serve the RPCs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self._session = ort.InferenceSession(
            model, sess_options=options, providers=choose_providers(providers)
        )
        self.providers = tuple(self._session.get_providers())
        self.signature = Signature(
            tuple(_tensor_spec(a) for a in self._session.get_inputs()),
            tuple(_tensor_spec(a) for a in self._session.get_outputs()),
        )
        self._output_names = [t.name for t in self.signature.outputs]
        # A CPU-only session is run through ONNX Runtime's C session directly, without the
        # Python wrapper's per-call work: its checks (every input fed, OrtValue ownership,
        # graph capture) hold by construction here (callers feed exactly the signature's
        # inputs, as numpy arrays; a missing one still fails in the run), and its run-time
        # fallback from a failing accelerator to the CPU has nothing to fall back from.
        # Any other session (or an ONNX Runtime without `_sess`) takes the public `run`.
        direct = getattr(self._session, "_sess", None)
        self._direct_run = (
            direct.run if direct is not None and self.providers == ("CPUExecutionProvider",)
            else None
        )

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Every output, in signature order. Blocking (the batcher decides on which thread)."""
        if self._direct_run is not None:
            return self._direct_run(self._output_names, feeds, None)
        return self._session.run(self._output_names, feeds)
