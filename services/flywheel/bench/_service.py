"""Shared by the ingest and features benchmarks: settings for a fresh namespace."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any


def bench_common(args: Any):
    """CommonSettings from FLYWHEEL_* (broker and Redis), with a fresh namespace."""
    from flywheel.common.settings import CommonSettings

    spec = getattr(args, "spec", None)
    base = CommonSettings()
    update: dict[str, Any] = {"namespace": f"bench{secrets.token_hex(4)}", "log_json": False,
                              "log_level": "WARNING"}
    if spec:
        update["spec_path"] = Path(spec)
    return base.model_copy(update=update)


class ServiceProcess:
    """A service run as `python -m flywheel.<module>` on a free port, as it is deployed: its own
    process, so a benchmark's client does not share the server's interpreter and event loop."""

    def __init__(self, module: str, common: Any, service_env: dict[str, str]) -> None:
        import os
        import socket
        import subprocess
        import sys

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        prefix = f"FLYWHEEL_{module.upper()}_"
        env = {
            **os.environ,
            "FLYWHEEL_NAMESPACE": common.namespace,
            "FLYWHEEL_KAFKA_BOOTSTRAP": common.kafka_bootstrap,
            "FLYWHEEL_REDIS_URL": common.redis_url,
            "FLYWHEEL_SPEC_PATH": str(common.spec_path),
            "FLYWHEEL_LOG_LEVEL": "WARNING",
            f"{prefix}GRPC_PORT": str(port),
            f"{prefix}METRICS_PORT": "0",
            **{prefix + key.upper(): value for key, value in service_env.items()},
        }
        self.target = f"127.0.0.1:{port}"
        self._process = subprocess.Popen(
            [sys.executable, "-m", f"flywheel.{module}"], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def stop(self, timeout_s: float = 15.0) -> None:
        import subprocess

        self._process.terminate()
        try:
            self._process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(5)
