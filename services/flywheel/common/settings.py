"""Settings from FLYWHEEL_* environment variables: read once at start, validated, frozen.

`CommonSettings` holds what every service shares (where Kafka, Redis, the spec and the
registry are; the namespace). Each service adds its own class deriving from `ServiceSettings`
with its own prefix (FLYWHEEL_INGEST_, FLYWHEEL_FEATURES_, ...). The composition root of a
service reads both once and passes them down; nothing else reads the environment.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_", frozen=True, extra="ignore")

    namespace: str = Field(
        "",
        description="Prefix for topic names ('<ns>.'), consumer groups and Redis keys ('<ns>:'). "
        "Empty in production; tests give every test its own.",
        pattern=r"^[A-Za-z0-9_-]*$",
    )
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers.")
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis URL.")
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
