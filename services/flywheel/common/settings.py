"""Settings from FLYWHEEL_* environment variables: read once at start, validated, frozen.

`CommonSettings` holds what every service shares (where Kafka, Redis, the spec and the
registry are; the namespace). Each service adds its own class deriving from `ServiceSettings`
with its own prefix (FLYWHEEL_INGEST_, FLYWHEEL_FEATURES_, ...). The composition root of a
service reads both once and passes them down; nothing else reads the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class GrpcSecuritySettings(BaseSettings):
    """TLS, mutual TLS and bearer tokens of every gRPC hop, server and client side alike.

    A process that serves uses the ``tls_cert``/``tls_key`` pair (and ``tls_client_ca`` to
    require client certificates) and checks callers' tokens against ``tokens_file`` and the
    JWT keys; a process that calls (a service calling another, the CLI, the demo, the
    benches) trusts ``tls_ca`` and presents ``tls_client_cert``/``tls_client_key`` and
    ``token``. Everything empty (the default): plain text, no tokens, as in the quick start.
    """

    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_GRPC_", frozen=True, extra="ignore")

    tls_cert: Path | None = Field(None, description="Server certificate chain (PEM); with "
                                  "tls_key, the server listens with TLS. Re-read on change.")
    tls_key: Path | None = Field(None, description="Server private key (PEM).")
    tls_client_ca: Path | None = Field(
        None, description="CA bundle (PEM) that signs client certificates; set, the server "
        "requires one (mutual TLS).")
    tls_ca: Path | None = Field(None, description="CA bundle (PEM) a client trusts for the "
                                "servers it calls; set, clients connect with TLS.")
    tls_client_cert: Path | None = Field(None, description="Client certificate chain (PEM) "
                                         "presented under mutual TLS.")
    tls_client_key: Path | None = Field(None, description="Client private key (PEM).")
    tls_server_name: str = Field("", description="Name a client expects in the server "
                                 "certificate, when not the host it dials.")
    tokens_file: Path | None = Field(
        None, description="Static bearer tokens, kept hashed (sha256), each with a name and "
        "roles (YAML). Re-read on change.")
    jwt_public_keys: str = Field(
        "", description="Comma-separated PEM files of the JWT issuer's public keys; a JWT "
        "verified by one of them is accepted.")
    jwt_issuer: str = Field("", description="Expected `iss` of a JWT ('' accepts any).")
    jwt_audience: str = Field("flywheel", description="Expected `aud` of a JWT.")
    jwt_roles_claim: str = Field("roles", description="The JWT claim holding the roles.")
    token: SecretStr = Field(SecretStr(""), description="Bearer token a client sends.")
    token_file: Path | None = Field(None, description="File holding the bearer token a "
                                    "client sends (instead of `token`).")

    @model_validator(mode="after")
    def _pairs(self) -> GrpcSecuritySettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if (self.tls_client_cert is None) != (self.tls_client_key is None):
            raise ValueError("tls_client_cert and tls_client_key go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca (mutual TLS) needs tls_cert and tls_key")
        return self

    @property
    def server_tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def mutual_tls(self) -> bool:
        return self.tls_client_ca is not None

    @property
    def client_tls(self) -> bool:
        return self.tls_ca is not None

    @property
    def jwt_key_files(self) -> tuple[Path, ...]:
        return tuple(Path(p.strip()) for p in self.jwt_public_keys.split(",") if p.strip())

    @property
    def auth_enabled(self) -> bool:
        return self.tokens_file is not None or bool(self.jwt_key_files)

    def bearer_token(self) -> str:
        """The token this process sends as a client ('' for none); a token file is read
        here, once, by the caller that builds its channels."""
        if self.token_file is not None:
            return self.token_file.read_text().strip()
        return self.token.get_secret_value()


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_", frozen=True, extra="ignore")

    namespace: str = Field(
        "",
        description="Prefix for topic names ('<ns>.'), consumer groups and Redis keys ('<ns>:'). "
        "Empty in production; tests give every test its own.",
        pattern=r"^[A-Za-z0-9_-]*$",
    )
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers.")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="How every Kafka client of the process reaches the brokers.")
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = Field(
        "SCRAM-SHA-512", description="SASL mechanism (SASL_* protocols).")
    kafka_sasl_username: str = Field("", description="SASL user (SASL_* protocols).")
    kafka_sasl_password: SecretStr = Field(SecretStr(""), description="SASL password.")
    kafka_ssl_ca: Path | None = Field(None, description="CA bundle (PEM) trusted for the "
                                      "brokers' certificates (SSL, SASL_SSL).")
    kafka_ssl_cert: Path | None = Field(None, description="Client certificate (PEM), for "
                                        "brokers that require one.")
    kafka_ssl_key: Path | None = Field(None, description="Client private key (PEM).")
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", description="Redis URL; `rediss://user:password@host:port/0"
        "?ssl_ca_certs=ca.pem` for TLS and an ACL user (ssl_certfile / ssl_keyfile for a "
        "client certificate).")
    spec_path: Path = Field(Path("flywheel.yaml"), description="The declarative spec file.")
    registry_uri: str = Field(".flywheel/registry", description="Model registry directory.")
    log_level: str = Field("INFO", description="Root log level.")
    log_json: bool = Field(True, description="JSON log lines (one object per line).")
    kafka_timeout_s: float = Field(
        10.0, gt=0, description="Upper bound on one Kafka request or delivery wait."
    )
    redis_timeout_s: float = Field(
        2.0, gt=0, description="Socket timeout of Redis calls; a call made for a caller waits "
        "at most this, cut to the caller's remaining deadline less a margin, after which Redis "
        "is UNAVAILABLE, named.",
    )
    grpc_security: GrpcSecuritySettings = Field(
        default_factory=lambda: GrpcSecuritySettings(),
        description="TLS and tokens of the gRPC hops (FLYWHEEL_GRPC_*).",
    )

    def kafka_client_security(self) -> dict[str, str]:
        """The librdkafka properties of `kafka_security_protocol` (empty for PLAINTEXT)."""
        protocol = self.kafka_security_protocol
        if protocol == "PLAINTEXT":
            return {}
        config = {"security.protocol": protocol.lower()}
        if protocol.startswith("SASL_"):
            config.update({"sasl.mechanism": self.kafka_sasl_mechanism,
                           "sasl.username": self.kafka_sasl_username,
                           "sasl.password": self.kafka_sasl_password.get_secret_value()})
        if protocol.endswith("SSL"):
            for key, path in (("ssl.ca.location", self.kafka_ssl_ca),
                              ("ssl.certificate.location", self.kafka_ssl_cert),
                              ("ssl.key.location", self.kafka_ssl_key)):
                if path is not None:
                    config[key] = str(path)
        return config

    # Traces (flywheel.common.tracing): off unless one of these says where spans go.
    otlp_endpoint: str = Field(
        "", validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                                          "OTEL_EXPORTER_OTLP_ENDPOINT"),
        description="OTLP/gRPC collector endpoint (the standard OpenTelemetry variables, "
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT): spans are "
        "exported there. Unset, and without the two settings below, tracing costs nothing.",
    )
    trace_dir: Path | None = Field(
        None, description="Write every span as a JSON line to <dir>/<service>-<pid>.jsonl "
        "(tests, debugging).",
    )
    trace_memory_spans: int = Field(
        0, ge=0, description="Keep the last N spans in memory, exported nowhere (measures what "
        "tracing costs without the I/O; benchmarks).",
    )
    trace_max_links: int = Field(
        1000, ge=1, description="Most span links on one span: a training run links to every "
        "trace whose labeled examples it trained on, up to this many.",
    )

    @property
    def redis_key_prefix(self) -> str:
        return f"{self.namespace}:" if self.namespace else ""

    def group_id(self, base: str) -> str:
        return f"{self.namespace}.{base}" if self.namespace else base


class ServiceSettings(BaseSettings):
    """Fields every service has; subclasses set their own env prefix and defaults."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    grpc_host: str = Field("127.0.0.1", description="Address the gRPC server binds.")
    grpc_port: int = Field(0, ge=0, le=65535, description="gRPC port (0: any free port).")
    metrics_port: int = Field(
        0, ge=0, le=65535, description="Prometheus HTTP port (0: any free port)."
    )
    max_message_bytes: int = Field(
        16 * 1024 * 1024, gt=0, description="Largest gRPC message accepted or sent."
    )
    max_concurrent_rpcs: int = Field(
        1024, gt=0, description="RPCs in flight before new ones get RESOURCE_EXHAUSTED."
    )
    shutdown_grace_s: float = Field(
        5.0, ge=0, description="Seconds in-flight RPCs get to finish on SIGTERM."
    )

