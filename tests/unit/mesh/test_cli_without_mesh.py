"""With no mesh up and nothing given, every command that needs the mesh says so in one line,
exits 3 at once, and no Kafka client is ever made (so no librdkafka retry lines)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

COMMANDS = [
    ("models", "list"),
    ("models", "promote", "churn", "2"),
    ("models", "register", "model.onnx", "--name", "churn", "--features", "f00"),
    ("demo", "--duration", "5"),
    ("bench", "ingest"),
]


def write_model(path: Path) -> None:
    """A valid one-feature ONNX model, so that `register` gets past checking its file."""
    from onnx import TensorProto, helper, save

    rows = helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, 1])
    out = helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, 1])
    graph = helper.make_graph([helper.make_node("Identity", ["features"], ["scores"])],
                              "one", [rows], [out])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)]), str(path))


def run_cli(args, cwd: Path, home: Path) -> tuple[subprocess.CompletedProcess, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    env["FLYWHEEL_HOME"] = str(home)
    started = time.monotonic()
    # A command that waited on a broker would retry for FLYWHEEL_KAFKA_TIMEOUT_S (10 s) and
    # more: the timeout is far beyond the one second this takes, far below those retries.
    done = subprocess.run([sys.executable, "-m", "flywheel.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=8, check=False)
    return done, time.monotonic() - started


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_one_line_naming_flywheel_up_and_no_client_noise(args, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write_model(elsewhere / "model.onnx")
    done, seconds = run_cli(args, elsewhere, tmp_path / "home")
    print(f"flywheel {' '.join(args)}: exit {done.returncode} in {seconds:.2f}s")
    assert done.returncode == 3, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("flywheel: error: the mesh is not up")
    assert "`flywheel up`" in lines[0]
    assert "rdkafka" not in done.stderr.lower() and "connect" not in done.stderr.lower()
    assert done.stdout == ""
    assert not (elsewhere / ".flywheel").exists(), "nothing may be written where it was run"
