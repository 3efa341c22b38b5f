"""Settings of the ingest service (FLYWHEEL_INGEST_*)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from flywheel.common.settings import ServiceSettings


class IngestSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_INGEST_", frozen=True, extra="ignore")

    grpc_port: int = Field(50051, ge=0, le=65535, description="gRPC port (0: any free port).")
    metrics_port: int = Field(9201, ge=0, le=65535, description="Prometheus port (0: any).")
    max_in_flight_events: int = Field(
        50_000, gt=0,
        description="IngestStream: events sent to Kafka but not yet acknowledged, per stream, "
        "before the stream stops reading (bounds memory).",
    )
    max_reported_rejections: int = Field(
        100_000, gt=0,
        description="Rejections listed in one reply at most (the rest only counted in rejected_count).",
    )
    ack_margin_s: float = Field(
        0.25, ge=0,
        description="Time kept back from the caller's deadline to answer UNAVAILABLE in time.",
    )
    readiness_interval_s: float = Field(
        5.0, gt=0, description="How often Kafka's metadata is checked once it answered."
    )
