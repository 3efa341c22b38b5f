"""Tokens and roles: the static tokens file, JWTs against the issuer's keys, roles per
method, and the statuses a denial answers."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import jwt
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from flywheel.common.grpc.auth import ALL_ROLES, DENIALS, Guard, guard_for, role_of, token_digest
from flywheel.common.settings import GrpcSecuritySettings

ISSUER = "https://issuer.test"


def _key_pair(folder: Path, name: str) -> tuple[ec.EllipticCurvePrivateKey, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    public = folder / f"{name}.pub.pem"
    public.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return key, public


def _jwt(key, sub: str, roles: list[str], exp_in_s: float = 300) -> str:
    return jwt.encode({"sub": sub, "roles": roles, "iss": ISSUER, "aud": "flywheel",
                       "exp": int(time.time() + exp_in_s)}, key, algorithm="ES256")


@pytest.fixture
def guard(tmp_path: Path) -> tuple[Guard, object, object]:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(yaml.safe_dump({"tokens": [
        {"name": "reader", "sha256": token_digest("reader-secret"), "roles": ["features-read"]},
        {"name": "operator", "sha256": token_digest("operator-secret"), "roles": list(ALL_ROLES)},
    ]}))
    trusted, public = _key_pair(tmp_path, "issuer")
    untrusted, _ = _key_pair(tmp_path, "stranger")
    security = GrpcSecuritySettings(tokens_file=tokens, jwt_public_keys=str(public),
                                    jwt_issuer=ISSUER)
    return guard_for(security), trusted, untrusted


def _bearer(token: str) -> tuple:
    return (("authorization", f"Bearer {token}"),)


def test_roles_per_method() -> None:
    assert role_of("/flywheel.v1.IngestService/IngestStream") == "ingest"
    assert role_of("/inference.GRPCInferenceService/ModelInfer") == "predict"
    assert role_of("/inference.GRPCInferenceService/ModelMetadata") == "predict"
    assert role_of("/flywheel.v1.PredictionService/Predict") == "predict"
    assert role_of("/flywheel.v1.FeatureStoreService/WriteFeatures") == "features-write"
    assert role_of("/flywheel.v1.FeatureStoreService/GetOnlineFeatures") == "features-read"
    assert role_of("/flywheel.v1.FeedbackService/RecordFeedbackStream") == "feedback"
    assert role_of("/flywheel.v1.TrainingService/PromoteModelVersion") == "admin"
    # A method no table names is closed: admin only.
    assert role_of("/flywheel.v1.SomethingNew/Do") == "admin"


def test_static_tokens_and_roles(guard) -> None:
    check, _, _ = guard
    method = "/flywheel.v1.FeatureStoreService/GetOnlineFeatures"
    assert check.check(method, "features-read", _bearer("reader-secret")) is None
    code, message = check.check("/flywheel.v1.FeatureStoreService/WriteFeatures",
                                "features-write", _bearer("reader-secret"))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "'reader'" in message and "'features-write'" in message
    assert "reader-secret" not in message
    code, message = check.check(method, "features-read", ())
    assert code == grpc.StatusCode.UNAUTHENTICATED and "bearer token" in message
    code, _ = check.check(method, "features-read", _bearer("guessed"))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    code, _ = check.check(method, "features-read", (("authorization", "Basic abc"),))
    assert code == grpc.StatusCode.UNAUTHENTICATED


def test_jwts(guard) -> None:
    check, trusted, untrusted = guard
    method = "/flywheel.v1.TrainingService/RollbackModel"
    assert check.check(method, "admin", _bearer(_jwt(trusted, "ci", ["admin"]))) is None
    code, message = check.check(method, "admin", _bearer(_jwt(trusted, "ci", ["admin"], -60)))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "expired" in message
    code, message = check.check(method, "admin", _bearer(_jwt(untrusted, "ci", ["admin"])))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "signature" in message
    code, message = check.check(method, "admin", _bearer(_jwt(trusted, "app", ["predict"])))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "'app'" in message


def test_denials_are_counted(guard) -> None:
    check, _, _ = guard
    method = "/flywheel.v1.FeedbackService/RecordFeedback"
    counted = DENIALS.labels(method, "UNAUTHENTICATED")
    before = counted._value.get()
    for _ in range(3):
        check.check(method, "feedback", ())
    assert counted._value.get() == before + 3


def test_tokens_file_is_reread_on_change(tmp_path: Path, monkeypatch) -> None:
    from flywheel.common.grpc import auth

    monkeypatch.setattr(auth, "_TOKENS_FILE_CHECK_S", 0.0)
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(yaml.safe_dump({"tokens": []}))
    check = guard_for(GrpcSecuritySettings(tokens_file=tokens))
    method = "/flywheel.v1.IngestService/Ingest"
    assert check.check(method, "ingest", _bearer("new"))[0] == grpc.StatusCode.UNAUTHENTICATED
    tokens.write_text(yaml.safe_dump({"tokens": [
        {"name": "late", "sha256": token_digest("new"), "roles": ["ingest"]}]}))
    assert check.check(method, "ingest", _bearer("new")) is None


def test_settings_pairs() -> None:
    with pytest.raises(ValueError, match="tls_cert and tls_key"):
        GrpcSecuritySettings(tls_cert=Path("a.pem"))
    with pytest.raises(ValueError, match="mutual TLS"):
        GrpcSecuritySettings(tls_client_ca=Path("ca.pem"))
    assert not GrpcSecuritySettings().auth_enabled
