"""What `flywheel models register` plans to store for a model brought from elsewhere: inputs
bound, vocabularies from the spec, external data copied (never from outside the model's
folder), provenance recorded; a model that cannot be served is refused before any write."""

from __future__ import annotations

import hashlib
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto

from flywheel.common.spec import load_spec
from flywheel.inference.registration import RegistrationError, Request, plan
from flywheel.inference.testing_models import (
    CLASSES,
    SCORE_FLAT,
    save_with_external_weights,
    scored_onnx,
)
from flywheel.v1 import common_pb2

SPEC = load_spec(Path(__file__).resolve().parents[3] / "flywheel.yaml")
MAX = 1 << 20


def _save(tmp_path: Path, model: onnx.ModelProto, name: str = "model.onnx") -> Path:
    path = tmp_path / name
    path.write_bytes(model.SerializeToString())
    return path


def _plan(path: Path, spec=SPEC, max_bytes: int = MAX, **options):
    return plan(Request(artifact=path, name=options.pop("name", "mixed"), **options), spec,
                max_bytes=max_bytes, user="ana", now_ms=1234)


def test_inputs_named_after_features_read_them_with_the_specs_vocabularies(tmp_path):
    model = scored_onnx([("segment", (None,), TensorProto.FLOAT),
                         ("visits", (None, 1), TensorProto.INT64),
                         ("f00", (None, 1), TensorProto.FLOAT)], [1.0, 0.1, 2.0], 0.0, SCORE_FLAT)
    path = _save(tmp_path, model)
    planned = _plan(path, features=["segment", "visits", "f00"], threshold=0.3)
    assert planned.features == ["segment", "visits", "f00"]
    assert planned.entity_type == "customer"
    assert planned.task == common_pb2.MODEL_TASK_BINARY_CLASSIFICATION
    details = planned.details
    assert {b.input_name: list(b.feature_names) for b in details.inputs} == {
        "segment": ["segment"], "visits": ["visits"], "f00": ["f00"]}
    assert list(details.vocabularies["segment"].values) == ["retail", "smb", "enterprise"]
    assert set(details.vocabularies) == {"segment"}
    assert details.score_threshold == pytest.approx(0.3)
    assert details.provenance == common_pb2.Provenance(
        source_sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        source_path=str(path.resolve()), registered_by="ana", registered_at_unix_ms=1234)
    assert planned.lineage.training_mode == "byo"
    assert planned.outputs == ["score"] and planned.files == {}


def test_the_specs_model_gives_the_features_task_and_entity(tmp_path):
    model = scored_onnx([("features", (None, 24), TensorProto.FLOAT)], [0.1] * 24, 0.0, CLASSES)
    planned = _plan(_save(tmp_path, model), name="churn")
    assert planned.features == [f"f{i:02d}" for i in range(24)]
    assert list(planned.details.inputs) == []  # the plain single matrix


def test_mappings_alone_give_the_features_without_a_spec(tmp_path):
    model = scored_onnx([("a", (None, 2), TensorProto.FLOAT), ("b", (None, 1), TensorProto.FLOAT)],
                        [1, 1, 1], 0.0, CLASSES)
    planned = _plan(_save(tmp_path, model), spec=None, mappings=["a=x1,x2", "b=x3"])
    assert planned.features == ["x1", "x2", "x3"] and not planned.details.vocabularies


def _external(tmp_path: Path, location: str) -> Path:
    """A model whose weights live in `location` (written there when it stays in the folder)."""
    model = scored_onnx([("features", (None, 2), TensorProto.FLOAT)], [0.5, -0.5], 0.0, CLASSES)
    path = tmp_path / "big.onnx"
    save_with_external_weights(model, path, location)
    return path


def test_external_data_files_are_registered_with_the_model(tmp_path):
    path = _external(tmp_path, "data/weights.bin")
    planned = _plan(path, spec=None, features=["a", "b"])
    assert planned.files == {"data/weights.bin": (tmp_path / "data" / "weights.bin").read_bytes()}
    assert planned.artifact == path.read_bytes()


@pytest.mark.parametrize("location", ["../outside.bin", "/etc/passwd", "sub/../../x.bin"],
                         ids=["dot-dot", "absolute", "nested-dot-dot"])
def test_external_data_outside_the_models_folder_is_refused(tmp_path, location):
    (tmp_path.parent / "outside.bin").write_bytes(b"\0" * 64)
    with pytest.raises(RegistrationError, match="outside the model's folder"):
        _plan(_external(tmp_path, location), spec=None, features=["a", "b"])


def test_external_data_through_a_symlink_out_of_the_folder_is_refused(tmp_path):
    path = _external(tmp_path, "weights.bin")
    outside = tmp_path.parent / f"{tmp_path.name}-real.bin"
    outside.write_bytes((tmp_path / "weights.bin").read_bytes())
    (tmp_path / "weights.bin").unlink()
    (tmp_path / "weights.bin").symlink_to(outside)
    with pytest.raises(RegistrationError, match="resolves outside"):
        _plan(path, spec=None, features=["a", "b"])


def test_a_model_with_its_data_over_the_size_limit_is_refused(tmp_path):
    path = _external(tmp_path, "weights.bin")
    with pytest.raises(RegistrationError, match="MAX_ARTIFACT_BYTES"):
        _plan(path, spec=None, features=["a", "b"], max_bytes=path.stat().st_size + 4)


def test_missing_external_data_is_refused(tmp_path):
    path = _external(tmp_path, "weights.bin")
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(RegistrationError, match="missing"):
        _plan(path, spec=None, features=["a", "b"])


@pytest.mark.parametrize(("options", "needle"), [
    ({"features": ["f00", "nope"]}, "not features of 'customer'"),
    ({"features": ["f00", "f01"], "entity_type": "shop"}, "not in the spec"),
    ({"features": ["f00", "f01"], "task": "multiclass_classification"}, "outputs cannot be read"),
    ({"features": ["f00", "f01"], "threshold": 1.5}, "threshold"),
    ({"features": ["f00"]}, "takes 2 columns"),
    ({}, "give --features"),
], ids=["unknown-feature", "unknown-entity", "score-of-a-multiclass", "threshold", "width",
        "no-features"])
def test_what_cannot_be_served_is_refused_naming_it(tmp_path, options, needle):
    model = scored_onnx([("x", (None, 2), TensorProto.FLOAT)], [1, 1], 0.0, SCORE_FLAT)
    with pytest.raises(RegistrationError) as refused:
        _plan(_save(tmp_path, model), name="unknown-model", **options)
    assert needle in str(refused.value)


def test_an_invalid_onnx_file_is_refused(tmp_path):
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"not a model")
    with pytest.raises(RegistrationError, match="not an ONNX model"):
        _plan(path, spec=None, features=["a"])
