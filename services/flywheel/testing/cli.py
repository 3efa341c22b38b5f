"""Running the ``flywheel`` command from a test as a user would: a separate process, its
settings from ``FLYWHEEL_*`` variables, and (optionally) a recorded mesh to find."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from flywheel.common.settings import CommonSettings
from flywheel.mesh import state as mesh_state

ROOT = Path(__file__).resolve().parents[3]


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


def mesh_environment(kafka_bootstrap: str, redis_url: str, namespace: str, home: Path,
                     spec_path: Path = ROOT / "flywheel.yaml") -> dict[str, str]:
    """This process's environment without its FLYWHEEL_* variables, plus the mesh's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    env.update(
        FLYWHEEL_KAFKA_BOOTSTRAP=kafka_bootstrap,
        FLYWHEEL_REDIS_URL=redis_url,
        FLYWHEEL_NAMESPACE=namespace,
        FLYWHEEL_HOME=str(home),
        FLYWHEEL_SPEC_PATH=str(spec_path),
        FLYWHEEL_LOG_JSON="true",
    )
    return env


def flywheel_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "flywheel.cli", *args]


def flywheel(env: Mapping[str, str], *args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(flywheel_argv(*args), cwd=ROOT, env=dict(env), capture_output=True,
                          text=True, timeout=timeout, check=False)


def last_json(done: subprocess.CompletedProcess, codes: tuple[int, ...] = (0, 1)) -> dict:
    assert done.returncode in codes, f"rc {done.returncode}\n{done.stderr[-3000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def log_tails(home: Path, lines: int = 15) -> str:
    out = []
    for log in sorted((home / "logs").glob("*.log")):
        out.append(f"--- {log.name}")
        out.extend(log.read_text(errors="replace").splitlines()[-lines:])
    return "\n".join(out)
