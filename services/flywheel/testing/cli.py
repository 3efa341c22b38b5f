"""Running the ``flywheel`` command from a test as a user would: a separate process, its
settings from ``FLYWHEEL_*`` variables, and (optionally) a recorded mesh to find."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from flywheel.common.settings import CommonSettings
from flywheel.mesh import state as mesh_state


def cli_env(common: CommonSettings, home: Path) -> dict[str, str]:
    """The variables that point the command at `common`'s broker, namespace and registry,
    with `home` as FLYWHEEL_HOME (where it looks for a recorded mesh)."""
    return {
        "FLYWHEEL_HOME": str(home), "FLYWHEEL_REGISTRY_URI": common.registry_uri,
        "FLYWHEEL_NAMESPACE": common.namespace, "FLYWHEEL_KAFKA_BOOTSTRAP": common.kafka_bootstrap,
        "FLYWHEEL_KAFKA_TIMEOUT_S": str(common.kafka_timeout_s), "FLYWHEEL_LOG_JSON": "false",
    }


def run_flywheel(args: list[str], env: Mapping[str, str],
                 timeout_s: float = 120.0) -> subprocess.CompletedProcess:
    """``flywheel <args>`` in a child process (this interpreter, the caller's environment plus
    `env`); stdout and stderr captured as text."""
    return subprocess.run(
        [sys.executable, "-c", "from flywheel.cli import main; raise SystemExit(main())", *args],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout_s,
    )


def record_training(home: Path, common: CommonSettings, port: int) -> None:
    """Writes ``<home>/mesh.json`` as ``flywheel up`` would, naming only a training service
    listening on `port` (one started in-process by the test)."""
    address = f"127.0.0.1:{port}"
    service = mesh_state.ServiceState("training", os.getpid(), "test", address, port, 0, "",
                                      time.time())
    home.mkdir(parents=True, exist_ok=True)
    mesh_state.save(home / "mesh.json", mesh_state.MeshState(
        home=str(home), namespace=common.namespace, kafka_bootstrap=common.kafka_bootstrap,
        redis_url=common.redis_url, spec_path=str(common.spec_path),
        registry_uri=common.registry_uri, started_at=time.time(), services={"training": service},
    ))
