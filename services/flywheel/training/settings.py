"""Settings of the training service (FLYWHEEL_TRAINING_*)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from flywheel.common.settings import ServiceSettings


class TrainingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_TRAINING_", frozen=True, extra="ignore")

    grpc_port: int = Field(50055, ge=0, le=65535, description="gRPC port (0: any free port).")
    sign_key: Path | None = Field(
        None, description="PEM EC private key the versions this service registers are signed "
        "with (OpenSSF model signing; inference verifies them against its trusted keys).")
    metrics_port: int = Field(9205, ge=0, le=65535, description="Prometheus port (0: any free).")
    data_dir: Path = Field(
        Path(".flywheel/training"),
        description="Where labeled examples are kept as Parquet segments (with their topic, "
        "partition and offset), so any run can be reproduced; and the record of every "
        "training run (runs/).",
    )
    runs_kept: int = Field(
        1000, gt=0,
        description="How many training runs are kept on disk (data_dir/runs, one JSON file "
        "each) and answered for after a restart; beyond it the oldest finished runs go.",
    )
    promote_to: Literal["champion", "shadow"] = Field(
        "champion",
        description="Where a candidate that passes the offline gate goes: straight to "
        "champion, or to shadow first (then the live gate decides on joined labels). With no "
        "champion yet, it always becomes champion.",
    )
    check_interval_s: float = Field(
        0.5, gt=0, description="How often triggers and the live gate are evaluated."
    )
    consumer_max_batch: int = Field(
        5000, gt=0, description="Labeled records per segment write (at most)."
    )
    onnx_threads: int = Field(1, gt=0, description="ONNX Runtime threads for evaluation.")
    lease_ttl_s: float = Field(
        5.0, gt=0,
        description="The controller lease (Redis): one training service per mesh is active, "
        "the others stand by; the active renews it every fifth of this, and a standby takes "
        "over within this much (plus one renewal) of the active's death.",
    )
    engine: Literal["local", "ray"] = Field(
        "local",
        description="Where a run trains: in this process (local), or on a Ray cluster (ray: "
        "Ray Data reads the window's segments, Ray Train fits; the ray extra).",
    )
    local_max_bytes: int = Field(
        0, ge=0,
        description="The memory a local run may take (bytes; 0: half of what is available "
        "at start), estimated as the trainer's own copy of the window (LightGBM and XGBoost "
        "stream the rows: about features + 28 bytes a row; other trainers: three float64 "
        "copies of the rows). A larger window is refused, naming the ray engine.",
    )
    ray_address: str = Field(
        "auto",
        description="The Ray cluster of the ray engine: auto (the one `ray start` made on "
        "this machine), host:port of its head, or ray://host:10001 (e.g. a KubeRay head).",
    )
    ray_workers: int = Field(
        2, gt=0, description="Ray Train workers of a data-parallel (LightGBM, XGBoost) run."
    )
    ray_storage: str = Field(
        ".flywheel/training/ray",
        description="Where Ray Train writes a run's checkpoint (the model it returns): a "
        "folder every Ray node and this service share, or a URI Ray understands (s3://...).",
    )
    ray_timeout_s: float = Field(
        1800.0, gt=0, description="Longest a run's work on the Ray cluster (reading the "
        "window, checking it, fitting) may take before it is cancelled with what it started "
        "and the run fails.",
    )
