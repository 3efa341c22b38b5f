"""compose.offline.yaml, read as compose merges it over compose.yaml: every container of the
default stack on the host network with nothing published, every service listening and
health-checked on the loopback at its own host port, and the offline images by name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from flywheel.mesh.services import SERVICES

ROOT = Path(__file__).resolve().parents[2]


class _ComposeLoader(yaml.SafeLoader):
    """YAML with compose's `!reset` tag (the value is dropped from the merge)."""


_ComposeLoader.add_constructor("!reset", lambda loader, node: ("!reset", loader.construct_sequence(node)))


def _load(name: str) -> dict:
    return yaml.load((ROOT / name).read_text(), Loader=_ComposeLoader)


def _dotenv() -> dict[str, str]:
    lines = (ROOT / ".env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


@pytest.fixture(scope="module")
def base() -> dict:
    return _load("compose.yaml")


@pytest.fixture(scope="module")
def offline() -> dict:
    return _load("compose.offline.yaml")


def test_every_default_service_is_on_the_host_network_with_nothing_published(base, offline):
    default = [name for name, spec in base["services"].items() if "profiles" not in spec]
    for name in [*default, "tools"]:
        spec = offline["services"][name]
        assert spec["network_mode"] == "host", name
        if "ports" in base["services"][name]:
            assert spec["ports"] == ("!reset", []), name


def test_each_service_listens_and_is_checked_on_the_loopback_at_its_host_port(offline):
    for service in SERVICES:
        spec = offline["services"][service.name]
        env = spec["environment"]
        variable = f"${{{service.name.upper()}_HOST_PORT}}"
        assert env[f"{service.env_prefix}GRPC_HOST"] == "127.0.0.1"
        assert env[service.grpc_port_env] == variable, service.name
        assert spec["healthcheck"]["test"][-1] == variable, service.name
        assert env[service.metrics_port_env].startswith(f"${{{service.name.upper()}_METRICS_HOST_PORT:-")
    addresses = offline["services"]["tools"]["environment"]
    assert addresses["FLYWHEEL_KAFKA_BOOTSTRAP"] == "127.0.0.1:${KAFKA_HOST_PORT}"
    assert addresses["FLYWHEEL_REDIS_URL"] == "redis://127.0.0.1:${REDIS_HOST_PORT}/0"
    kafka = offline["services"]["kafka"]
    assert "127.0.0.1:${KAFKA_HOST_PORT}" in kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert kafka["healthcheck"]["test"][-1] == "127.0.0.1:${KAFKA_HOST_PORT}"


def test_offline_images_and_build_come_from_the_env_file(offline):
    env = _dotenv()
    used = set(re.findall(r"\$\{([A-Z0-9_]+)\}", (ROOT / "compose.offline.yaml").read_text()))
    assert used <= set(env), f"without a default and not in .env: {sorted(used - set(env))}"
    assert offline["services"]["kafka"]["image"] == "${OFFLINE_KAFKA_IMAGE}"
    assert offline["services"]["redis"]["image"] == "${OFFLINE_REDIS_IMAGE}"
    build = offline["services"]["features"]["build"]
    assert build["args"] == {"PYTHON_IMAGE": "${OFFLINE_PYTHON_IMAGE}", "PIP_NO_INDEX": "1"}
    assert build["network"] == "host"
