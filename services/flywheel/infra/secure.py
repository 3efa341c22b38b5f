"""What a secured local mesh is made of, kept under ``$FLYWHEEL_HOME/tls/``.

`SecureMaterial.ensure(folder)` makes, the first time (and keeps after):

- a local CA (``ca.pem``, ``ca-key.pem``), and from it a server certificate for the Kafka
  broker and for Redis, and one certificate per principal (the five services and
  ``operator``, which the CLI, the demo and the benches use) valid both as a server's (its
  gRPC port) and as a client's (mutual TLS);
- ``secrets.json`` (owner-only): each principal's bearer token, Kafka SCRAM password and
  Redis password; ``tokens.yaml``, the servers' tokens file, holds only their sha256;
  Redis's ``users.acl`` only the sha256 of the passwords;
- the roles of each token: a service's token carries the roles of the calls it makes to
  another service (inference reads the feature store), ``operator`` every role.

The environment of a principal's process (`environ`) then says everything: gRPC TLS, mutual
TLS and tokens (FLYWHEEL_GRPC_*), Kafka over SASL_SSL with its SCRAM user
(FLYWHEEL_KAFKA_*), Redis over TLS with its ACL user (a ``rediss://`` URL).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from urllib.parse import quote

import yaml

from flywheel.common.grpc.auth import ALL_ROLES, token_digest
from flywheel.infra.certificates import LocalCA

SERVICE_NAMES = ("ingest", "features", "inference", "feedback", "training")
OPERATOR = "operator"
PRINCIPALS = (*SERVICE_NAMES, OPERATOR)
#: The Kafka user the broker itself authenticates as (inter-broker listener).
BROKER_USER = "broker"
SCRAM_MECHANISM = "SCRAM-SHA-512"
#: Roles of each principal's token: what it calls on other services.
TOKEN_ROLES: dict[str, tuple[str, ...]] = {
    "inference": ("features-read",),
    OPERATOR: ALL_ROLES,
}
#: Principals with a Redis ACL user: every one (a user per service).
REDIS_USERS = PRINCIPALS


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


@dataclass(frozen=True)
class SecureMaterial:
    folder: Path

    @classmethod
    def ensure(cls, folder: Path) -> SecureMaterial:
        """The material in `folder`, made there when missing (a complete set is kept)."""
        folder.mkdir(parents=True, exist_ok=True)
        material = cls(folder)
        if not (folder / "secrets.json").exists():
            material._make()
        return material

    @classmethod
    def existing(cls, folder: Path) -> SecureMaterial | None:
        return cls(folder) if (folder / "secrets.json").exists() else None

    def _make(self) -> None:
        ca = LocalCA.open(self.folder)
        ca.issue("kafka", client=False)
        ca.issue("redis", client=False)
        for principal in PRINCIPALS:
            ca.issue(principal)
        kafka_users = (BROKER_USER, *PRINCIPALS)
        values = {
            "tokens": {p: secrets.token_urlsafe(32) for p in PRINCIPALS},
            "kafka": {u: secrets.token_hex(24) for u in kafka_users},
            "redis": {u: secrets.token_hex(24) for u in REDIS_USERS},
        }
        # The broker reads its key and certificate chain from one PEM file.
        keystore = (self.folder / "kafka-key.pem").read_text() + (
            self.folder / "kafka.pem").read_text()
        _write_private(self.folder / "kafka-keystore.pem", keystore)
        _write_private(self.folder / "tokens.yaml", yaml.safe_dump({"tokens": [
            {"name": p, "sha256": token_digest(values["tokens"][p]),
             "roles": list(TOKEN_ROLES.get(p, ()))} for p in PRINCIPALS]}))
        acl = ["user default off"] + [
            f"user {user} on #{hashlib.sha256(password.encode()).hexdigest()} ~* &* +@all"
            for user, password in values["redis"].items()]
        _write_private(self.folder / "users.acl", "\n".join(acl) + "\n")
        for principal, token in values["tokens"].items():
            _write_private(self.token_file(principal), token + "\n")
        # Last: its presence says the set is complete.
        _write_private(self.folder / "secrets.json", json.dumps(values, indent=1))

    @cached_property
    def _secrets(self) -> dict:
        return json.loads((self.folder / "secrets.json").read_text())

    @property
    def ca_file(self) -> Path:
        return self.folder / "ca.pem"

    def cert(self, name: str) -> tuple[Path, Path]:
        return self.folder / f"{name}.pem", self.folder / f"{name}-key.pem"

    def token_file(self, principal: str) -> Path:
        return self.folder / f"{principal}.token"

    @property
    def tokens_file(self) -> Path:
        return self.folder / "tokens.yaml"

    def kafka_password(self, user: str) -> str:
        return self._secrets["kafka"][user]

    def redis_password(self, user: str) -> str:
        return self._secrets["redis"][user]

    # -- Kafka --------------------------------------------------------------------------------

    def scram_users(self) -> list[str]:
        """``--add-scram`` values of the storage format: every Kafka user and its password."""
        return [f"{SCRAM_MECHANISM}=[name={user},password={password}]"
                for user, password in self._secrets["kafka"].items()]

    def broker_overrides(self, host: str, port: int, controller_port: int) -> dict[str, str]:
        """The broker config that puts its client listener on SASL_SSL with SCRAM. The
        controller listener stays plain text on the loopback address: the broker is its
        only client."""
        jaas = ("org.apache.kafka.common.security.scram.ScramLoginModule required "
                f'username="{BROKER_USER}" password="{self.kafka_password(BROKER_USER)}";')
        return {
            "listeners": f"SASL_SSL://{host}:{port},CONTROLLER://{host}:{controller_port}",
            "advertised.listeners": f"SASL_SSL://{host}:{port}",
            "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "SASL_SSL",
            "sasl.enabled.mechanisms": SCRAM_MECHANISM,
            "sasl.mechanism.inter.broker.protocol": SCRAM_MECHANISM,
            f"listener.name.sasl_ssl.{SCRAM_MECHANISM.lower()}.sasl.jaas.config": jaas,
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self.folder / "kafka-keystore.pem"),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.ca_file),
            "ssl.client.auth": "none",
        }

    def kafka_env(self, user: str) -> dict[str, str]:
        return {
            "FLYWHEEL_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "FLYWHEEL_KAFKA_SASL_MECHANISM": SCRAM_MECHANISM,
            "FLYWHEEL_KAFKA_SASL_USERNAME": user,
            "FLYWHEEL_KAFKA_SASL_PASSWORD": self.kafka_password(user),
            "FLYWHEEL_KAFKA_SSL_CA": str(self.ca_file),
        }

    def kafka_client(self, user: str) -> dict[str, str]:
        """librdkafka properties of `user` (what `kafka_env` gives a process)."""
        return {"security.protocol": "sasl_ssl", "sasl.mechanism": SCRAM_MECHANISM,
                "sasl.username": user, "sasl.password": self.kafka_password(user),
                "ssl.ca.location": str(self.ca_file)}

    # -- Redis --------------------------------------------------------------------------------

    def redis_args(self) -> list[str]:
        """redis-server arguments: TLS only (no plain port), ACL users from ``users.acl``."""
        cert, key = self.cert("redis")
        return ["--tls-cert-file", str(cert), "--tls-key-file", str(key),
                "--tls-ca-cert-file", str(self.ca_file), "--tls-auth-clients", "no",
                "--aclfile", str(self.folder / "users.acl")]

    def redis_url(self, host: str, port: int, user: str = OPERATOR) -> str:
        return (f"rediss://{user}:{quote(self.redis_password(user))}@{host}:{port}/0"
                f"?ssl_ca_certs={quote(str(self.ca_file))}")

    # -- gRPC ---------------------------------------------------------------------------------

    def grpc_env(self, principal: str) -> dict[str, str]:
        """FLYWHEEL_GRPC_* of a principal: it serves with its certificate, requires client
        certificates from the CA, checks tokens, and calls with its certificate and token."""
        cert, key = self.cert(principal)
        return {
            "FLYWHEEL_GRPC_TLS_CERT": str(cert), "FLYWHEEL_GRPC_TLS_KEY": str(key),
            "FLYWHEEL_GRPC_TLS_CLIENT_CA": str(self.ca_file),
            "FLYWHEEL_GRPC_TLS_CA": str(self.ca_file),
            "FLYWHEEL_GRPC_TLS_CLIENT_CERT": str(cert), "FLYWHEEL_GRPC_TLS_CLIENT_KEY": str(key),
            "FLYWHEEL_GRPC_TOKENS_FILE": str(self.tokens_file),
            "FLYWHEEL_GRPC_TOKEN_FILE": str(self.token_file(principal)),
        }

    def environ(self, principal: str, redis_host: str, redis_port: int) -> dict[str, str]:
        """Every FLYWHEEL_* variable that secures one principal's process."""
        return {
            **self.grpc_env(principal),
            **self.kafka_env(principal),
            "FLYWHEEL_REDIS_URL": self.redis_url(redis_host, redis_port, principal),
        }
