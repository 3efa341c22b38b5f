"""Signed model versions (OpenSSF model signing, key-based, offline): an untouched signed
version loads; a flipped byte, a swapped file, a signature by a key not trusted, and a
missing signature when signatures are required are each refused before ONNX Runtime (or the
ONNX parser) sees the bytes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from flywheel.common.registry import ModelRegistry
from flywheel.common.signing import SIGNATURE_FILE, Verifier
from flywheel.inference.loader import Loader, Rejected, session_factory
from flywheel.inference.testing_models import feature_names, flip_byte, logistic_regression_onnx

N_FEATURES = 4


class SpyFactory:
    def __init__(self) -> None:
        self.calls = 0
        self._make = session_factory(("CPUExecutionProvider",), 1, 1)

    def __call__(self, model):
        self.calls += 1
        return self._make(model)


def _keys(folder: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    private, public = folder / f"{name}.pem", folder / f"{name}.pub.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    folder = tmp_path_factory.mktemp("keys")
    return {"trusted": _keys(folder, "trusted"), "stranger": _keys(folder, "stranger")}


def _register(root: Path, sign_key: Path | None, seed: int = 0):
    registry = ModelRegistry(root, sign_key=sign_key)
    meta = registry.register("churn", logistic_regression_onnx(N_FEATURES, seed=seed), task=1,
                             entity_type="customer", feature_names=feature_names(N_FEATURES),
                             files={"native/state.json": b'{"coef": [1, 2]}'})
    return registry, meta


def _loader(registry: ModelRegistry, spy: SpyFactory, trusted: Path, required: bool = True):
    return Loader(registry, spy, max_artifact_bytes=1 << 20,
                  signatures=Verifier([trusted], required=required))


def _refused(loader: Loader, meta, spy: SpyFactory) -> str:
    with pytest.raises(Rejected) as refused:
        loader.load(meta)
    assert refused.value.reason == "signature"
    assert spy.calls == 0  # no session was ever made
    return refused.value.message


def test_untouched_signed_version_loads(tmp_path: Path, keys) -> None:
    registry, meta = _register(tmp_path, keys["trusted"][0])
    assert (registry.version_dir("churn", meta.version) / SIGNATURE_FILE).is_file()
    spy = SpyFactory()
    loaded = _loader(registry, spy, keys["trusted"][1]).load(meta)
    assert loaded.meta.version == meta.version and spy.calls == 1
    # The registry's own rewrite of the metadata (a status change) keeps the signature valid.
    registry.set_status("churn", meta.version, meta.status, "checked")
    assert _loader(registry, SpyFactory(), keys["trusted"][1]).load(meta)


def test_flipped_byte_is_refused(tmp_path: Path, keys) -> None:
    registry, meta = _register(tmp_path, keys["trusted"][0])
    path = registry.artifact_path(meta)
    path.write_bytes(flip_byte(path.read_bytes()))
    spy = SpyFactory()
    assert "model.onnx" in _refused(_loader(registry, spy, keys["trusted"][1]), meta, spy)


def test_swapped_file_is_refused(tmp_path: Path, keys) -> None:
    """Another valid model put in place, and the metadata's sha256 made to match it: only
    the signature tells."""
    registry, meta = _register(tmp_path, keys["trusted"][0])
    other = logistic_regression_onnx(N_FEATURES, seed=3)
    registry.artifact_path(meta).write_bytes(other)
    meta_file = registry.version_dir("churn", meta.version) / "metadata.json"
    raw = json.loads(meta_file.read_text())
    raw["sha256"] = hashlib.sha256(other).hexdigest()
    meta_file.write_text(json.dumps(raw))
    meta = registry.get("churn", meta.version)
    spy = SpyFactory()
    _refused(_loader(registry, spy, keys["trusted"][1]), meta, spy)
    # So is a native-state file swapped under a signed version.
    registry2, meta2 = _register(tmp_path / "second", keys["trusted"][0])
    (registry2.version_dir("churn", meta2.version) / "native" / "state.json").write_bytes(b"{}")
    spy = SpyFactory()
    assert "state.json" in _refused(_loader(registry2, spy, keys["trusted"][1]), meta2, spy)


def test_signature_by_an_untrusted_key_is_refused(tmp_path: Path, keys) -> None:
    registry, meta = _register(tmp_path, keys["stranger"][0])
    spy = SpyFactory()
    _refused(_loader(registry, spy, keys["trusted"][1]), meta, spy)


def test_missing_signature_under_require_signature_is_refused(tmp_path: Path, keys) -> None:
    registry, meta = _register(tmp_path, None)
    spy = SpyFactory()
    assert "no signature" in _refused(_loader(registry, spy, keys["trusted"][1]), meta, spy)
    # Not required: an unsigned version loads as before.
    spy = SpyFactory()
    assert _loader(registry, spy, keys["trusted"][1], required=False).load(meta)
    assert spy.calls == 1


def test_required_signatures_need_a_trusted_key() -> None:
    with pytest.raises(ValueError, match="no trusted public key"):
        Verifier([], required=True)
