"""Settings of the feedback service (FLYWHEEL_FEEDBACK_*)."""

from __future__ import annotations

import socket

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from flywheel.common.settings import ServiceSettings


class FeedbackSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_FEEDBACK_", frozen=True, extra="ignore")

    grpc_port: int = Field(50054, ge=0, le=65535, description="gRPC port (0: any free port).")
    metrics_port: int = Field(9204, ge=0, le=65535, description="Prometheus port (0: any free).")
    instance_id: str = Field(
        default_factory=socket.gethostname,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Stable per instance: names the join's transactional.id and static group "
        "membership, so a restarted instance fences its dead predecessor and takes its "
        "partitions back at once. Two live instances must never share it.",
    )
    allow_model_labels: bool = Field(
        False,
        description="Feedback-loop guard: labels whose source is LABEL_SOURCE_MODEL (a model's "
        "own output fed back) are refused unless this is on. The source itself is the marking.",
    )
    join_max_batch: int = Field(1000, gt=0, description="Records per join transaction.")
    max_batch_size: int = Field(
        10000, gt=0, description="Most feedback items in one RecordFeedbackBatch call."
    )
    stream_chunk: int = Field(
        1000, gt=0, description="RecordFeedbackStream publishes in chunks of this many items."
    )
    max_future_seconds: float = Field(
        300.0, ge=0, description="Feedback event times further ahead than this are refused."
    )
