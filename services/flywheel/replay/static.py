"""The flywheel's baseline: the starting champion kept static, scored offline on every row.

Its ONNX is loaded from the registry at the start of the replay (the sha256 recorded in the
registry checked first) and run with ONNX Runtime on the file's values, encoded the way
inference encodes them (flywheel.common.encoding, the version's own vocabularies). Outputs
are read as inference reads them: the first integer output is the class, else the argmax of
the probabilities (or a lone score against the version's threshold); a regression model's
first float output is the value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from flywheel.common.encoding import codes_by_column, encode_row
from flywheel.common.registry import ModelRegistry, sha256_file
from flywheel.v1 import common_pb2

_ONNX_FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64}
BATCH = 4096


class StaticModelError(Exception):
    pass


class StaticModel:
    def __init__(self, meta: common_pb2.ModelVersion, artifact: bytes) -> None:
        import onnxruntime

        self.meta = meta
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1  # the mesh shares the machine
        try:
            self._session = onnxruntime.InferenceSession(
                artifact, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
            raise StaticModelError(f"{meta.model_name} v{meta.version}: ONNX Runtime refused "
                                   f"the artifact: {exc}") from None
        vocabularies = {name: list(v.values) for name, v in meta.vocabularies.items()}
        bindings = ([(b.input_name, list(b.feature_names)) for b in meta.inputs]
                    or [(self._session.get_inputs()[0].name, list(meta.feature_names))])
        types = {i.name: i.type for i in self._session.get_inputs()}
        self._inputs = [(name, features, codes_by_column(features, vocabularies),
                         _ONNX_FLOAT_TYPES.get(types.get(name, ""), np.float32))
                        for name, features in bindings]
        self._outputs = [(o.name, o.type) for o in self._session.get_outputs()]

    @classmethod
    def champion(cls, registry_uri: str, model: str) -> StaticModel:
        registry = ModelRegistry(registry_uri)
        meta = registry.resolve(model)
        path = registry.artifact_path(meta)
        if sha256_file(path) != meta.sha256:
            raise StaticModelError(f"{model} v{meta.version}: the artifact's sha256 does not "
                                   "match the registry's")
        return cls(meta, path.read_bytes())

    @property
    def version(self) -> int:
        return int(self.meta.version)

    @property
    def feature_names(self) -> list[str]:
        return [f for _, features, _, _ in self._inputs for f in features]

    def score(self, features: Mapping[str, Sequence[object]], rows: int) -> np.ndarray:
        """One prediction per row (class index or value), NaN where a value is missing."""
        out = np.full(rows, np.nan)
        complete = np.ones(rows, dtype=bool)
        for _, names, _, _ in self._inputs:
            for name in names:
                column = features.get(name)
                if column is None:
                    raise StaticModelError(f"the history has no column {name!r}, which "
                                           f"{self.meta.model_name} v{self.version} reads")
                complete &= np.array([v is not None for v in column], dtype=bool)
        index = np.flatnonzero(complete)
        for start in range(0, len(index), BATCH):
            chunk = index[start:start + BATCH]
            feeds = {
                name: np.array([encode_row([features[f][r] for f in names], codes) for r in chunk],
                               dtype=dtype).reshape(len(chunk), len(names))
                for name, names, codes, dtype in self._inputs
            }
            out[chunk] = self._predictions(self._session.run(None, feeds), len(chunk))
        return out

    def _predictions(self, outputs: list[np.ndarray], rows: int) -> np.ndarray:
        if self.meta.task == common_pb2.MODEL_TASK_REGRESSION:
            first_float = next(o for o, (_, t) in zip(outputs, self._outputs, strict=True)
                               if t in _ONNX_FLOAT_TYPES)
            return np.asarray(first_float, dtype=np.float64).reshape(rows, -1)[:, 0]
        for array, (_, kind) in zip(outputs, self._outputs, strict=True):
            if kind.startswith("tensor(int"):
                return np.asarray(array).reshape(rows).astype(np.float64)
        floats = [np.asarray(a).reshape(rows, -1) for a, (_, t) in zip(outputs, self._outputs,
                                                                         strict=True)
                  if t in _ONNX_FLOAT_TYPES]
        if not floats:
            raise StaticModelError(f"{self.meta.model_name} v{self.version}: no output to read "
                                   "a class from")
        scores = floats[0]
        if scores.shape[1] == 1:
            threshold = self.meta.score_threshold or 0.5
            return (scores[:, 0] >= threshold).astype(np.float64)
        return scores.argmax(axis=1).astype(np.float64)
