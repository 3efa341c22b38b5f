"""The loop closes: the five services as processes (`flywheel up`) on the session's real Kafka
and Redis, a short drift scenario (`flywheel demo`), then `flywheel down` leaves nothing.

After the drift the training service must promote a new version that then serves, accuracy
must recover, no promotion may be worse than what it replaced, and nothing acknowledged may
be lost: every accepted event readable from the store, every accepted label joined.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flywheel.infra import processes
from flywheel.testing.cli import flywheel, last_json, log_tails, mesh_environment

DURATION_S = 60
DRIFT_AT_S = 20
RATE = 200

pytestmark = pytest.mark.timeout(420)


def alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped has exited): it has a command line."""
    return processes.command_line(pid) is not None


@pytest.fixture
def mesh_env(kafka_bootstrap: str, redis_url: str, names, tmp_path: Path) -> dict[str, str]:
    return mesh_environment(kafka_bootstrap, redis_url, names.namespace, tmp_path / "home")


def test_drift_is_detected_retrained_promoted_and_recovered(mesh_env: dict[str, str]):
    home = Path(mesh_env["FLYWHEEL_HOME"])
    up = flywheel(mesh_env, "up", "--free-ports", "--json", timeout=240)
    assert up.returncode == 0, f"flywheel up failed:\n{up.stderr[-4000:]}"
    status = last_json(up)
    pids = {s["name"]: s["pid"] for s in status["services"]}
    assert len(pids) == 5 and all(alive(pid) for pid in pids.values()), status
    try:
        demo = flywheel(
            mesh_env, "demo", "--duration", str(DURATION_S), "--drift-at", str(DRIFT_AT_S),
            "--rate", str(RATE), "--json", timeout=240,
        )
        report = last_json(demo)
        print(json.dumps(report, indent=1))
        context = f"{json.dumps(report)}\n{demo.stderr[-2000:]}\n{log_tails(home)}"

        assert report["lost"] == 0, context
        assert report["duplicated_labels"] == 0, context
        assert report["events"] > 0.9 * RATE * DURATION_S, context
        assert report["labels"] > 0.8 * report["predictions"], context
        served_after_drift = [
            c["version"] for c in report["version_changes"]
            if c["t"] >= DRIFT_AT_S and c["version"] in report["versions_promoted"]
        ]
        assert served_after_drift, f"no promoted version served after the drift\n{context}"
        assert report["final_version"] in report["versions_promoted"], context
        assert report["worse_promotions"] == [], context
        assert report["accuracy_after_drift"] < report["accuracy_before_drift"] - 0.15, context
        assert report["recovered"], f"accuracy did not recover\n{context}"
        assert report["seconds_to_recover"] <= DURATION_S - DRIFT_AT_S, context
        assert report["accuracy_recovered"] >= report["target_accuracy"] - 0.02, context
        assert Path(report["plot"]).is_file()
    finally:
        down = flywheel(mesh_env, "down", "--json", timeout=120)
        assert down.returncode == 0, down.stderr[-2000:]
    left = {name: pid for name, pid in pids.items() if alive(pid)}
    assert not left, f"processes left behind by `flywheel down`: {left}"
    after = flywheel(mesh_env, "status", "--json", timeout=60)
    assert after.returncode == 3 and json.loads(after.stdout)["up"] is False
