"""`flywheel replay` on a small history through a mesh started by the test, and the demo
stopping with a clear error when the mesh goes away under it.

The replay's history is the linear world with one drift; its first rows train the starting
champion (--seed-rows). Until the first retrained version answers, the flywheel and the
static starting champion are the same model on the same rows: their window figures must be
equal, which checks the offline scoring and the prequential bookkeeping against each other.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from flywheel.replay.worlds import world_table
from flywheel.testing.cli import ROOT, flywheel, flywheel_argv, last_json, log_tails, mesh_environment

ROWS = 3000
SEED_ROWS = 600
DRIFT_AT = ROWS // 2  # of the file (one drift, midway); the replay counts from its first streamed row
WINDOW = 400

pytestmark = pytest.mark.timeout(420)


@pytest.fixture
def mesh_env(kafka_bootstrap: str, redis_url: str, names, tmp_path: Path):
    env = mesh_environment(kafka_bootstrap, redis_url, names.namespace, tmp_path / "home")
    up = flywheel(env, "up", "--free-ports", "--json", timeout=240)
    assert up.returncode == 0, f"flywheel up failed:\n{up.stderr[-4000:]}"
    try:
        yield env
    finally:
        flywheel(env, "down", "--json", timeout=120)


def test_replay_reports_prequential_figures_beside_the_static_champion(mesh_env, tmp_path: Path):
    table = world_table("linear", rows=ROWS, drifts=1, seed=3)
    labels = table.column("label")
    table = table.drop_columns(["label"]).append_column("churned", labels)
    path = tmp_path / "history.parquet"
    pq.write_table(table, path)

    done = flywheel(
        mesh_env, "replay", "--data", str(path), "--model", "churn", "--label-column", "churned",
        "--seed-rows", str(SEED_ROWS), "--rate", "400", "--label-delay", "0.5",
        "--window", str(WINDOW), "--json", timeout=240,
    )
    context = f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}\n{log_tails(Path(mesh_env['FLYWHEEL_HOME']))}"
    report = last_json(done, codes=(0,))
    print(json.dumps({k: v for k, v in report.items() if k != "candidates"}, indent=1))

    streamed = ROWS - SEED_ROWS
    assert report["rows"] == streamed and report["lost"] == 0, context
    assert report["scored"] == streamed, context
    assert report["drifts"] == [DRIFT_AT - SEED_ROWS], context
    assert 0.5 < report["prequential_accuracy"] <= 1.0, context
    assert 0.5 < report["static_prequential_accuracy"] <= 1.0, context
    assert report["gain"] == pytest.approx(
        report["prequential_accuracy"] - report["static_prequential_accuracy"], abs=2e-4)
    assert len(report["windows"]) == -(-streamed // WINDOW)
    assert sum(w["scored"] for w in report["windows"]) == streamed
    assert isinstance(report["versions_promoted"], list), context
    assert isinstance(report["versions_refused"], list) and isinstance(report["rollbacks"], list)
    assert report["labels_sent"] == streamed, context

    start = report["starting_version"]
    first = report["windows"][0]
    assert first["versions"] == [start], context
    assert first["accuracy"] > 0.85, context  # the seed model knows the first concept
    for window in report["windows"]:
        if window["versions"] == [start]:  # the same model on the same rows
            assert window["accuracy"] == window["static_accuracy"], window
    last = report["windows"][-1]
    assert last["static_accuracy"] < 0.75, context  # the concept turned 80 degrees
    [drift] = report["recovery"]
    assert drift["before"] > 0.85 and drift["static_rows_to_recover"] is None, context
    assert Path(report["plot"]).is_file()
    assert json.loads((Path(mesh_env["FLYWHEEL_HOME"]) / "replay" / "report.json").read_text())


def test_demo_stops_with_a_clear_error_when_the_mesh_goes_away(mesh_env):
    demo = subprocess.Popen(
        flywheel_argv("demo", "--duration", "600", "--rate", "100", "--json"),
        cwd=ROOT, env=mesh_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    lines: list[str] = []
    serving = threading.Event()

    def read_stderr() -> None:
        for line in demo.stderr:
            lines.append(line.rstrip())
            if "serving" in line:
                serving.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        assert serving.wait(timeout=180), "the demo never started streaming:\n" + "\n".join(lines)
        time.sleep(3)  # the actors are streaming
        down = flywheel(mesh_env, "down", "--json", timeout=120)
        assert down.returncode == 0, down.stderr[-2000:]
        returncode = demo.wait(timeout=90)  # a hang fails here instead of running on
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    reader.join(timeout=10)
    errors = [line for line in lines if line.startswith("flywheel: error:")]
    assert returncode != 0, "\n".join(lines[-20:])
    assert len(errors) == 1 and "the mesh went away" in errors[0], "\n".join(lines[-20:])
    assert not any("Traceback" in line for line in lines), "\n".join(lines)
