"""Settings of the feature store service (FLYWHEEL_FEATURES_*)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from flywheel.common.settings import ServiceSettings


class FeaturesSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="FLYWHEEL_FEATURES_", frozen=True, extra="ignore"
    )

    grpc_port: int = Field(50052, ge=0, le=65535, description="gRPC port (0: any free port).")
    metrics_port: int = Field(9202, ge=0, le=65535, description="Prometheus port (0: any).")
    snapshot_dir: Path = Field(
        Path(".flywheel/features"),
        description="Folder of the vector index snapshots (one sub-folder per namespace).",
    )
    snapshot_interval_s: float = Field(
        60.0, gt=0, description="Seconds between vector index snapshots (one more at stop)."
    )
    max_entity_ids: int = Field(
        10_000, gt=0, description="GetOnlineFeatures: entity ids per request at most."
    )
    max_k: int = Field(1_000, gt=0, description="SearchSimilar: largest k.")
    ivf_nprobe: int = Field(16, gt=0, description="IVF lists searched per query.")
    use_gpu: bool | None = Field(
        None, description="FAISS on the GPU: true, false, or unset (when one is present)."
    )
    consumer_max_batch: int = Field(
        1_000, gt=0, description="Events per consumer batch: one Redis call each."
    )
