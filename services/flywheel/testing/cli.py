"""The ``flywheel`` command run as a user runs it, for the end-to-end tests: a subprocess
with its own environment (the session's broker and Redis, a fresh namespace and home)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


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
