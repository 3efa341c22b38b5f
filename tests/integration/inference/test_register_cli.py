"""`flywheel models register` of a model whose weights are external data: the files travel
into the version's folder, the announcement makes the running inference service load it, and
it answers. A model whose external data points outside its folder is refused, registry
untouched."""

from __future__ import annotations

import json

import numpy as np
import pytest
from inference_support import SPEC_PATH, poll_until
from onnx import TensorProto

from flywheel.cli import main
from flywheel.common.grpc.client import aio_channel
from flywheel.inference.testing_models import (
    CLASSES,
    save_with_external_weights,
    scored_onnx,
    scored_reference,
)
from flywheel.v1 import prediction_pb2, prediction_pb2_grpc

WEIGHTS = ([0.9, -1.4], 0.2)


@pytest.fixture
def cli_env(monkeypatch, common, registry, tmp_path):
    """The command line pointed at the test's broker, namespace and registry."""
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FLYWHEEL_KAFKA_BOOTSTRAP", common.kafka_bootstrap)
    monkeypatch.setenv("FLYWHEEL_NAMESPACE", common.namespace)
    monkeypatch.setenv("FLYWHEEL_REGISTRY_URI", str(registry.root))
    monkeypatch.setenv("FLYWHEEL_SPEC_PATH", str(SPEC_PATH))


def _save_external(folder, location: str = "ext.weights"):
    folder.mkdir(parents=True, exist_ok=True)
    model = scored_onnx([("features", (None, 2), TensorProto.FLOAT)], *WEIGHTS, CLASSES)
    path = folder / "ext.onnx"
    save_with_external_weights(model, path, location)
    return path


async def test_a_model_with_external_data_is_registered_announced_and_served(
    inference, cli_env, registry, tmp_path, capsys,
):
    path = _save_external(tmp_path / "source")
    code = main(["models", "register", str(path), "--name", "ext", "--features", "f00,f01",
                 "--promote", "--json"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    answer = json.loads(printed.out.strip().splitlines()[-1])
    assert answer["version"] == 1 and answer["aliases"] == ["champion"]
    assert answer["provenance"]["source_path"] == str(path.resolve())
    assert answer["provenance"]["registered_by"] and answer["status"] == "ready"
    folder = registry.version_dir("ext", 1)
    assert (folder / "ext.weights").read_bytes() == (tmp_path / "source" / "ext.weights").read_bytes()
    assert registry.get("ext", 1).lineage.training_mode == "byo"

    await poll_until(lambda: "ext" in inference.store.model_names(), 30, "ext to be served")
    rows = np.random.default_rng(3).normal(size=(5, 2))
    async with aio_channel(f"127.0.0.1:{inference.port}") as channel:
        reply = await prediction_pb2_grpc.PredictionServiceStub(channel).Predict(
            prediction_pb2.PredictRequest(model="ext", rows=prediction_pb2.FeatureRows(
                rows=[prediction_pb2.FeatureRow(values=r) for r in rows.tolist()])), timeout=10)
    p = scored_reference(rows, *WEIGHTS)
    assert [r.output.predicted_class for r in reply.predictions] == (p >= 0.5).astype(int).tolist()


@pytest.mark.parametrize("location", ["../ext.weights", "/etc/passwd"], ids=["dot-dot", "absolute"])
def test_external_data_outside_the_models_folder_is_refused(
    cli_env, registry, tmp_path, capsys, location,
):
    (tmp_path / "ext.weights").write_bytes(b"\0" * 64)
    path = _save_external(tmp_path / "source", location)
    code = main(["models", "register", str(path), "--name", "ext", "--features", "f00,f01",
                 "--no-announce"])
    assert code == 1
    assert "points outside the model's folder" in capsys.readouterr().err
    assert registry.versions("ext") == []
