"""Loading a version: tampered artifacts are refused before an InferenceSession exists."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from flywheel.common.registry import ModelRegistry
from flywheel.inference.loader import Loader, Rejected, session_factory
from flywheel.inference.testing_models import feature_names, flip_byte, logistic_regression_onnx

N_FEATURES = 6


@pytest.fixture(scope="module")
def model_bytes() -> bytes:
    return logistic_regression_onnx(N_FEATURES)


class SpyFactory:
    def __init__(self) -> None:
        self.calls = 0
        self._make = session_factory(("CPUExecutionProvider",), 1, 1)

    def __call__(self, model):
        self.calls += 1
        return self._make(model)


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "registry")


def _register(registry: ModelRegistry, data: bytes):
    return registry.register("churn", data, task=1, entity_type="customer",
                             feature_names=feature_names(N_FEATURES))


def _loader(registry: ModelRegistry, spy: SpyFactory, max_bytes: int = 1 << 20) -> Loader:
    return Loader(registry, spy, max_artifact_bytes=max_bytes)


WEIGHTS = np.arange(N_FEATURES * 2, dtype=np.float32).reshape(N_FEATURES, 2)


def _matmul_model() -> onnx.ModelProto:
    """scores = features @ W, with W an initializer (the skl2onnx model keeps its weights in
    attributes, so it cannot show external data)."""
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["features", "W"], ["scores"])],
        "matmul",
        [onnx.helper.make_tensor_value_info("features", onnx.TensorProto.FLOAT, [None, N_FEATURES])],
        [onnx.helper.make_tensor_value_info("scores", onnx.TensorProto.FLOAT, [None, 2])],
        [numpy_helper.from_array(WEIGHTS, "W")],
    )
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])


def _with_external(location: str) -> bytes:
    """The MatMul model with W moved to external data at `location`."""
    model = _matmul_model()
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    del tensor.external_data[:]
    tensor.external_data.add(key="location", value=location)
    return model.SerializeToString()


def test_a_good_version_loads_warms_and_is_batchable(registry, model_bytes):
    spy = SpyFactory()
    loaded = _loader(registry, spy).load(_register(registry, model_bytes))
    assert spy.calls == 1 and loaded.batchable
    outputs = loaded.session.run({"features": np.zeros((3, N_FEATURES), np.float32)})
    assert outputs[0].shape == (3,) and outputs[1].shape == (3, 2)


def _flipped(registry, meta, data):
    registry.artifact_path(meta).write_bytes(flip_byte(data))


def _wrong_hash(registry, meta, data):
    path = registry.version_dir(meta.model_name, meta.version) / "metadata.json"
    raw = json.loads(path.read_text())
    raw["sha256"] = "0" * 64
    path.write_text(json.dumps(raw))


def _symlink(registry, meta, data):
    outside = registry.root / "elsewhere.onnx"
    outside.write_bytes(data)  # same bytes, so the hash alone would pass
    artifact = registry.artifact_path(meta)
    artifact.unlink()
    os.symlink(outside, artifact)


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [(_flipped, "hash"), (_wrong_hash, "hash"), (_symlink, "symlink")],
    ids=["flipped-byte", "wrong-hash", "symlink"],
)
def test_tampered_artifacts_never_reach_onnx_runtime(registry, model_bytes, tamper, reason):
    meta = _register(registry, model_bytes)
    tamper(registry, meta, model_bytes)
    spy = SpyFactory()
    with pytest.raises(Rejected) as refused:
        _loader(registry, spy).load(registry.get("churn", meta.version))
    assert refused.value.reason == reason
    assert spy.calls == 0


@pytest.mark.parametrize(
    "location", ["../../outside.bin", "/etc/passwd", "sub/../../x.bin"],
    ids=["dot-dot", "absolute", "nested-dot-dot"],
)
def test_external_data_outside_the_version_folder_is_refused(registry, model_bytes, location):
    meta = _register(registry, _with_external(location))
    (registry.root / "outside.bin").write_bytes(b"\0" * 64)
    spy = SpyFactory()
    with pytest.raises(Rejected) as refused:
        _loader(registry, spy).load(meta)
    assert refused.value.reason == "external_data" and spy.calls == 0


def test_external_data_behind_a_symlink_is_refused(registry, model_bytes):
    meta = _register(registry, _with_external("weights.bin"))
    target = registry.root / "real.bin"
    target.write_bytes(b"\0" * 64)
    os.symlink(target, registry.version_dir("churn", meta.version) / "weights.bin")
    spy = SpyFactory()
    with pytest.raises(Rejected) as refused:
        _loader(registry, spy).load(meta)
    assert refused.value.reason in ("symlink", "external_data") and spy.calls == 0


def test_external_data_inside_the_folder_loads(registry, model_bytes):
    weights = WEIGHTS.tobytes()
    meta = _register(registry, _with_external("weights.bin"))
    (registry.version_dir("churn", meta.version) / "weights.bin").write_bytes(weights)
    spy = SpyFactory()
    loaded = _loader(registry, spy).load(meta)
    assert spy.calls == 1 and loaded.batchable
    x = np.ones((2, N_FEATURES), np.float32)
    np.testing.assert_allclose(loaded.session.run({"features": x})[0], x @ WEIGHTS)


def test_oversize_artifacts_are_refused(registry, model_bytes):
    meta = _register(registry, model_bytes)
    spy = SpyFactory()
    with pytest.raises(Rejected) as refused:
        _loader(registry, spy, max_bytes=len(model_bytes) - 1).load(meta)
    assert refused.value.reason == "size" and spy.calls == 0


def test_a_model_of_the_wrong_width_is_refused(registry):
    meta = registry.register("churn", logistic_regression_onnx(N_FEATURES + 1), task=1,
                             entity_type="customer", feature_names=feature_names(N_FEATURES))
    with pytest.raises(Rejected) as refused:
        _loader(registry, SpyFactory()).load(meta)
    assert refused.value.reason == "signature"


def test_garbage_that_hashes_right_is_refused_by_the_onnx_checks(registry):
    meta = _register(registry, b"\x08\x07" + b"not a model" * 10)
    spy = SpyFactory()
    with pytest.raises(Rejected) as refused:
        _loader(registry, spy).load(meta)
    assert refused.value.reason == "onnx" and spy.calls == 0
