"""Shared by the ingest and features benchmarks: settings for a fresh namespace."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any


def bench_common(args: Any):  # noqa: ANN201 - CommonSettings, imported lazily
    """CommonSettings from FLYWHEEL_* (broker and Redis), with a fresh namespace."""
    from flywheel.common.settings import CommonSettings

    spec = getattr(args, "spec", None)
    base = CommonSettings()
    update: dict[str, Any] = {"namespace": f"bench{secrets.token_hex(4)}", "log_json": False,
                              "log_level": "WARNING"}
    if spec:
        update["spec_path"] = Path(spec)
    return base.model_copy(update=update)
