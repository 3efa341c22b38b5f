"""Settings of the inference service (FLYWHEEL_INFERENCE_*); read once by `__main__`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from flywheel.common.settings import ServiceSettings


class InferenceSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_INFERENCE_", frozen=True, extra="ignore")

    grpc_port: int = Field(50053, ge=0, le=65535, description="gRPC port (0: any free port).")
    metrics_port: int = Field(9203, ge=0, le=65535, description="Prometheus port (0: any free).")

    # -- ONNX Runtime ------------------------------------------------------------------------
    providers: tuple[str, ...] = Field(
        ("CUDAExecutionProvider", "CPUExecutionProvider"),
        description="Execution providers in order of preference; those this build of ONNX "
        "Runtime lacks are skipped, and the CPU provider is always the last resort.",
    )
    intra_op_threads: int = Field(
        1, ge=0, description="Threads inside one session run (0: ONNX Runtime's default)."
    )
    inter_op_threads: int = Field(1, ge=0, description="Threads across graph nodes (0: default).")
    run_threads: int = Field(
        1, gt=0, description="Worker threads running sessions (see inline_max_run_us)."
    )
    inline_max_run_us: int = Field(
        100,
        ge=0,
        description="A batch runs directly on the event loop, skipping the worker-thread "
        "hand-off (which costs a few hundred microseconds of CPU), while timed runs of its size "
        "take less than this on average; slower runs go to the worker threads. 0: never inline.",
    )

    # -- dynamic batching --------------------------------------------------------------------
    # Large on purpose: in a busy server a session run's fixed cost dwarfs a small model's
    # per-row cost, so requests of a few hundred rows gain from sharing runs as single rows
    # do (256-row requests: about a quarter more throughput than with 64). The default matches
    # max_predict_rows.
    max_batch_size: int = Field(
        4096, gt=0, description="Most rows coalesced into one session run (requests of many "
        "rows are coalesced too, up to this many rows in all)."
    )
    max_queue_delay_us: int = Field(
        1000,
        ge=0,
        description="How long the first queued request waits for others to join its batch, "
        "while requests arrive closer together than this on average; a trickle of requests "
        "further apart goes without waiting, as does a request of max_batch_size rows or more. "
        "Requests that queue while a run is in flight join the next batch without waiting. The "
        "event loop's timers fire at millisecond resolution when it is otherwise idle, so a "
        "wait lasts about 1 ms at any setting from 1 to 1000.",
    )

    # -- model loading -----------------------------------------------------------------------
    max_artifact_bytes: int = Field(
        512 * 1024 * 1024, gt=0, description="Largest artifact (with its external data) loaded."
    )
    warmup_rows: int = Field(2, gt=0, description="Rows of the dummy batch run before a swap.")
    trusted_signing_keys: str = Field(
        "", description="Comma-separated PEM public keys whose model signatures (OpenSSF model "
        "signing) are trusted; a signed version is verified against them before a session is "
        "created.")
    require_signature: bool = Field(
        False, description="Refuse a version that is unsigned or not signed by a trusted key, "
        "as a corrupt one is refused (the version serving keeps serving).")

    @property
    def trusted_key_files(self) -> tuple[Path, ...]:
        return tuple(Path(p.strip()) for p in self.trusted_signing_keys.split(",") if p.strip())
    load_timeout_s: float = Field(120.0, gt=0, description="Upper bound on loading one version.")
    max_pinned_versions: int = Field(
        4, ge=0, description="Versions other than champion and shadow kept loaded for the "
        "requests that name them (Predict `version`, ModelInfer `model_version`), all models "
        "together: one is loaded on its first request, and the least recently used is evicted "
        "beyond this many. 0: only champion and shadow are served.",
    )

    # -- Predict -----------------------------------------------------------------------------
    feature_store_target: str = Field(
        "127.0.0.1:50052", description="host:port of flywheel.v1.FeatureStoreService."
    )
    feature_store_timeout_s: float = Field(
        2.0, gt=0, description="Upper bound on one GetOnlineFeatures call, cut to the caller's "
        "remaining deadline less a margin; past it the feature store is UNAVAILABLE, named.",
    )
    feature_store_calls_in_flight: int = Field(
        1, gt=0, description="GetOnlineFeatures calls in flight per model's features at once; "
        "concurrent Predicts meanwhile share the next call (one call for all their ids).",
    )
    max_predict_rows: int = Field(4096, gt=0, description="Most rows (or entity ids) per Predict.")
    log_wait_for_ack: bool = Field(
        True,
        description="Predict answers only after Kafka acknowledged every prediction record of "
        "the request (all awaited together); false: fire and forget.",
    )
    log_timeout_s: float = Field(
        10.0, gt=0, description="Upper bound on waiting for the prediction records' acks."
    )
    # Uncompressed by default: a Predict waits for its records' acks, so batches stay a few
    # small records, where compression saves little and costs CPU twice per batch: here, and
    # in the broker, which decompresses every batch to validate it.
    log_compression: Literal["none", "lz4", "zstd", "snappy", "gzip"] = Field(
        "none", description="compression.type of the prediction log's producer (large "
        "feature vectors or many rows per Predict may gain from lz4 or zstd).",
    )
    log_linger_ms: int = Field(
        2, ge=0, description="Producer linger of the prediction log (latency vs batching)."
    )
