"""The secured local stack, all real processes: `flywheel up --secure` starts its own Kafka
broker (SASL_SSL listener, SCRAM users) and Redis (TLS, ACL users) and the five services
with mutual TLS and tokens (the services also trust a JWT issuer key the test holds).

- the denial matrix: every method of every service, called with no token, an expired JWT, a
  JWT signed by an untrusted key, a valid JWT lacking the method's role and a static token
  lacking it: each case refused with its status (UNAUTHENTICATED, PERMISSION_DENIED naming
  the role); the operator's token passes the check on every method; health stays open;
  every denial is counted in the services' metrics;
- a client trusting another CA, and one without a client certificate, are refused;
- Kafka refuses a client without credentials (plain text, TLS without SASL, a wrong
  password); Redis refuses one without its ACL user (no user, a wrong password, plain text);
- `flywheel status` says what is secured, and `flywheel demo` runs unchanged on the secured
  mesh and loses nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import jwt
import pytest
import redis
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from flywheel.common.grpc.auth import ALL_ROLES, role_of
from flywheel.common.grpc.client import health_status
from flywheel.common.settings import GrpcSecuritySettings
from flywheel.infra.certificates import LocalCA
from flywheel.infra.secure import OPERATOR, SecureMaterial
from flywheel.mesh import state as mesh_state
from flywheel.oip import grpc_service_pb2
from flywheel.v1 import features_pb2, feedback_pb2, ingest_pb2, prediction_pb2, training_pb2

ROOT = Path(__file__).resolve().parents[2]
ISSUER = "https://issuer.flywheel.test"

pytestmark = pytest.mark.timeout(900)

# Service (as `flywheel up` names it) -> the generated modules of the APIs it serves.
APIS = {
    "ingest": (ingest_pb2,),
    "features": (features_pb2,),
    "inference": (prediction_pb2, grpc_service_pb2),
    "feedback": (feedback_pb2,),
    "training": (training_pb2,),
}


def flywheel(env: dict[str, str], *args: str, timeout: float = 300):
    return subprocess.run([sys.executable, "-m", "flywheel.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


@dataclass
class SecuredMesh:
    env: dict[str, str]
    state: mesh_state.MeshState
    material: SecureMaterial
    issuer_key: ec.EllipticCurvePrivateKey

    def address(self, service: str) -> str:
        return self.state.address(service)

    def tls(self, **changes) -> GrpcSecuritySettings:
        """The operator's transport (mutual TLS), without a token."""
        cert, key = self.material.cert(OPERATOR)
        values = {"tls_ca": self.material.ca_file, "tls_client_cert": cert,
                  "tls_client_key": key, **changes}
        return GrpcSecuritySettings(**values)

    def token(self, principal: str) -> str:
        return self.material.token_file(principal).read_text().strip()

    def jwt(self, roles, exp_in_s: float = 300, key=None) -> str:
        return jwt.encode({"sub": "ci-robot", "roles": list(roles), "iss": ISSUER,
                           "aud": "flywheel", "exp": int(time.time() + exp_in_s)},
                          key or self.issuer_key, algorithm="ES256")


@pytest.fixture(scope="module")
def secured(tmp_path_factory) -> Iterator[SecuredMesh]:
    home = tmp_path_factory.mktemp("secure-mesh")
    issuer_key = ec.generate_private_key(ec.SECP256R1())
    public = home / "issuer.pub.pem"
    public.write_bytes(issuer_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    env.update(FLYWHEEL_HOME=str(home), FLYWHEEL_SPEC_PATH=str(ROOT / "flywheel.yaml"),
               FLYWHEEL_LOG_JSON="true",
               # The services trust this issuer's JWTs besides their static tokens.
               FLYWHEEL_GRPC_JWT_PUBLIC_KEYS=str(public), FLYWHEEL_GRPC_JWT_ISSUER=ISSUER)
    up = flywheel(env, "up", "--secure", "--free-ports", "--json", timeout=400)
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        state = mesh_state.load(home / "mesh.json")
        material = mesh_state.secure_material(state)
        assert material is not None
        # Commands find the operator's certificate and token from the state alone.
        command_env = {k: v for k, v in env.items() if not k.startswith("FLYWHEEL_GRPC_")}
        yield SecuredMesh(command_env, state, material, issuer_key)
    finally:
        down = flywheel(env, "down", timeout=120)
        assert down.returncode == 0, down.stderr[-2000:]


def _methods() -> list[tuple[str, str, bool]]:
    """(service, full method name, client streaming) of every method the mesh serves."""
    found = []
    for service, modules in APIS.items():
        for module in modules:
            for api in module.DESCRIPTOR.services_by_name.values():
                for method in api.methods:
                    found.append((service, f"/{api.full_name}/{method.name}",
                                  method.client_streaming))
    return found


def _call(channel: grpc.Channel, method: str, streaming: bool, token: str | None):
    """Calls `method` with an empty request (a stream of none), bytes in and out; returns
    the status code and details."""
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    try:
        if streaming:
            channel.stream_unary(method)(iter(()), timeout=10, metadata=metadata)
        else:
            channel.unary_unary(method)(b"", timeout=10, metadata=metadata)
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


def test_denial_matrix_on_every_method(secured: SecuredMesh) -> None:
    from flywheel.common.grpc.client import sync_channel

    methods = _methods()
    assert len(methods) == 26  # the OIP repository and statistics extensions included
    untrusted = ec.generate_private_key(ec.SECP256R1())
    cases = tried = denied = 0
    wrong = []
    passed = []
    for service, method, streaming in methods:
        role = role_of(method)
        others = [r for r in ALL_ROLES if r != role]
        expected = [
            ("no token", None, grpc.StatusCode.UNAUTHENTICATED, "bearer token"),
            ("expired JWT", secured.jwt(ALL_ROLES, exp_in_s=-120),
             grpc.StatusCode.UNAUTHENTICATED, "expired"),
            ("JWT of an untrusted key", secured.jwt(ALL_ROLES, key=untrusted),
             grpc.StatusCode.UNAUTHENTICATED, "signature"),
            ("JWT lacking the role", secured.jwt(others),
             grpc.StatusCode.PERMISSION_DENIED, f"'{role}'"),
            # The ingest service's own token carries no role at all.
            ("static token lacking the role", secured.token("ingest"),
             grpc.StatusCode.PERMISSION_DENIED, f"'{role}'"),
        ]
        with sync_channel(secured.address(service), security=secured.tls()) as channel:
            for case, token, code, says in expected:
                cases += 1
                got, details = _call(channel, method, streaming, token)
                tried += 1
                if got == code and says in details:
                    denied += 1
                else:
                    wrong.append((method, case, got, details))
            # The operator's token passes the check: whatever the empty request earns, it
            # is no authentication or authorization refusal.
            got, details = _call(channel, method, streaming, secured.token(OPERATOR))
            if got not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                passed.append(method)
    print(f"denial matrix: {cases} cases on {len(methods)} methods of 5 services, "
          f"{denied} denied with the right status ({100 * denied / tried:.0f} %)")
    assert wrong == []
    assert denied == cases == 5 * 26
    assert sorted(passed) == sorted(m for _, m, _ in methods)


def test_denials_are_counted_in_metrics(secured: SecuredMesh) -> None:
    from flywheel.common.grpc.client import sync_channel

    method = "/flywheel.v1.TrainingService/PromoteModelVersion"
    with sync_channel(secured.address("training"), security=secured.tls()) as channel:
        for _ in range(3):
            assert _call(channel, method, False, secured.token("inference"))[0] == (
                grpc.StatusCode.PERMISSION_DENIED)
    port = secured.state.services["training"].metrics_port
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    lines = [line for line in text.splitlines()
             if line.startswith("flywheel_grpc_denials_total{") and method in line
             and "PERMISSION_DENIED" in line]
    assert lines and float(lines[0].rsplit(" ", 1)[1]) >= 3
    log = Path(secured.state.services["training"].log).read_text()
    denial_lines = [json.loads(line) for line in log.splitlines()
                    if line.startswith("{") and '"call denied"' in line]
    assert any(d.get("token_name") == "inference" for d in denial_lines)
    assert secured.token("inference") not in log


def test_transport_refusals_and_open_health(secured: SecuredMesh, tmp_path: Path) -> None:
    other = LocalCA.create(tmp_path / "other")
    target = secured.address("features")
    # Health needs no token, only the transport.
    assert health_status(target, timeout_s=5, security=secured.tls()) == "SERVING"
    assert health_status(target, timeout_s=5, security=secured.tls(tls_ca=other.ca_file)) == (
        "UNREACHABLE")
    no_certificate = GrpcSecuritySettings(tls_ca=secured.material.ca_file)
    assert health_status(target, timeout_s=5, security=no_certificate) == "UNREACHABLE"
    assert health_status(target, timeout_s=5) == "UNREACHABLE"  # plain text


def test_kafka_refuses_clients_without_credentials(secured: SecuredMesh) -> None:
    bootstrap = secured.state.kafka_bootstrap
    good = secured.material.kafka_client(OPERATOR)
    attempts = {
        "plain text": {},
        "TLS without SASL": {"security.protocol": "ssl",
                             "ssl.ca.location": good["ssl.ca.location"]},
        "wrong password": {**good, "sasl.password": "not-the-password"},
    }
    for what, config in attempts.items():
        admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 3000,
                             "logger": _quiet(), **config})
        with pytest.raises(KafkaException):
            admin.list_topics(timeout=4)
        assert what
    admin = AdminClient({"bootstrap.servers": bootstrap, **good})
    assert admin.list_topics(timeout=10).brokers


def test_redis_refuses_clients_without_their_acl_user(secured: SecuredMesh) -> None:
    parts = secured.state.redis_url.split("://", 1)[1].split("/", 1)[0]
    host, port = parts.rsplit(":", 1)
    ca = secured.material.ca_file
    attempts = {
        "no user": f"rediss://{host}:{port}/0?ssl_ca_certs={ca}",
        "wrong password": f"rediss://features:wrong@{host}:{port}/0?ssl_ca_certs={ca}",
        "plain text": f"redis://features:{secured.material.redis_password('features')}"
                      f"@{host}:{port}/0",
    }
    for url in attempts.values():
        client = redis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3)
        with pytest.raises(redis.RedisError):
            client.ping()
        client.close()
    good = redis.Redis.from_url(secured.material.redis_url(host, int(port), "features"),
                                socket_timeout=3)
    assert good.ping()
    good.close()


def test_status_and_demo_on_the_secured_mesh(secured: SecuredMesh) -> None:
    status = flywheel(secured.env, "status", "--json", timeout=60)
    assert status.returncode == 0, status.stderr[-2000:]
    payload = json.loads(status.stdout.strip().splitlines()[-1])
    assert payload["secured"]["material"] == str(secured.material.folder)
    assert all(s["health"] in ("SERVING", "NOT_SERVING") for s in payload["services"])
    demo = flywheel(secured.env, "demo", "--duration", "40", "--json", timeout=400)
    assert demo.returncode == 0, demo.stderr[-3000:]
    report = json.loads(demo.stdout.strip().splitlines()[-1])
    print(f"demo on the secured mesh: events {report['events']}, labels "
          f"{report['labels_joined']}, lost {report['lost']}, promoted "
          f"{report['versions_promoted']}, ok {report['ok']}")
    assert report["lost"] == 0 and report["lost_events"] == 0 and report["lost_labels"] == 0
    assert report["events"] > 0 and report["labels_joined"] > 0


def _quiet():
    import logging

    logger = logging.getLogger("tests.secure.kafka")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    return logger
