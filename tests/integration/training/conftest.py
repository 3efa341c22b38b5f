"""Fixtures of the training tests: an in-process training service per test."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from training_kit import SwitchTrainer, write_spec

from flywheel.common.settings import CommonSettings
from flywheel.infra.ports import free_port
from flywheel.training.app import TrainingApp
from flywheel.training.settings import TrainingSettings


@pytest.fixture
async def make_app(names, kafka_bootstrap, redis_url, tmp_path):
    started = []

    async def make(triggers: str, *, spec_trainer: bool = False, settings: dict | None = None,
                   **spec) -> TrainingApp:
        """A training app over the test spec (see write_spec for `spec`); its trainer is the
        switchable logistic one, or with `spec_trainer` the one the spec declares;
        `settings`: TrainingSettings fields beside the test's own."""
        common = CommonSettings(
            namespace=names.namespace, kafka_bootstrap=kafka_bootstrap, redis_url=redis_url,
            spec_path=write_spec(tmp_path / "spec.yaml", triggers, **spec),
            registry_uri=str(tmp_path / "registry"), log_json=False,
        )
        service = TrainingSettings(grpc_port=0, metrics_port=0, data_dir=tmp_path / "data",
                                   check_interval_s=0.2, **(settings or {}))
        app = TrainingApp(common, service, trainer=None if spec_trainer else SwitchTrainer())
        await app.start()
        started.append(app)
        return app

    yield make
    for app in started:
        await app.stop()


@pytest.fixture(scope="session")
def ray_address(ray_cluster):
    """The test Ray cluster's head (host:port of its GCS)."""
    return ray_cluster["address"]


@pytest.fixture(scope="session")
def ray_client_address(ray_cluster):
    """The test Ray cluster's Ray Client server (ray://host:port)."""
    return ray_cluster["client"]


@pytest.fixture(scope="session")
def ray_cluster():
    """A real Ray cluster for the ray engine: `ray start --head --block` as a process, on the
    loopback only, every port of its own; its addresses."""
    if importlib.util.find_spec("ray") is None:
        pytest.fail("Ray is not installed: the ray engine's tests need the ray extra, which "
                    "scripts/setup.sh installs (pip install -e '.[ray]')")
    # Ray's own switch, read when ray is first imported: keep the cluster and its drivers
    # on 127.0.0.1 (else a driver turns 127.0.0.1 into the machine's first address).
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # socket paths must stay short
    port = free_port()
    ports = {flag: str(free_port()) for flag in (
        "--ray-client-server-port", "--dashboard-port", "--dashboard-agent-listen-port",
        "--dashboard-agent-grpc-port", "--metrics-export-port", "--runtime-env-agent-port",
        "--node-manager-port", "--object-manager-port")}
    log_path = Path(temp) / "ray-start.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", "from ray.scripts.scripts import main; main()", "start",
             "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port),
             "--num-cpus", "4", "--include-dashboard", "false", "--disable-usage-stats",
             "--temp-dir", temp, *[x for pair in ports.items() for x in pair]],
            stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ),
            start_new_session=True)  # its own process group: ended whole at the close
    deadline = time.monotonic() + 120
    while b"Ray runtime started" not in log_path.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            _end_group(process)
            pytest.fail(f"ray start did not come up:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.2)
    try:
        yield {"address": f"127.0.0.1:{port}",
               "client": f"ray://127.0.0.1:{ports['--ray-client-server-port']}"}
    finally:
        import ray

        ray.shutdown()
        _end_group(process)


def _end_group(process: subprocess.Popen) -> None:
    """SIGTERM to the cluster's process group (`ray start --block` stops what it started),
    then SIGKILL to whatever of the group is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
