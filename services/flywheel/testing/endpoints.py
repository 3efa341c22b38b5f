"""Where the tests find Kafka and Redis, and the start of each kind of source."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from flywheel.infra import InfraSettings, LocalInfra


@dataclass(frozen=True)
class Endpoints:
    """Addresses of a ready broker and Redis server.

    ``source``: ``external`` (from FLYWHEEL_KAFKA_BOOTSTRAP / FLYWHEEL_REDIS_URL),
    ``testcontainers`` (containers on a Docker engine) or ``local`` (processes started by
    ``flywheel.infra``); ``local+external`` when only one of the two addresses was given.
    """

    kafka_bootstrap: str
    redis_url: str
    source: str


def docker_answers(timeout: float = 3.0, images: tuple[str, ...] = ()) -> bool:
    """True when testcontainers is importable, a Docker engine answers ``docker info`` and
    already has ``images``: a test session pulls nothing (no registry may be reachable, as
    on a machine where CI starts an engine only for the compose tests)."""
    if importlib.util.find_spec("testcontainers") is None or shutil.which("docker") is None:
        return False
    checks = [["docker", "info", "--format", "{{.ServerVersion}}"]]
    if images:
        checks.append(["docker", "image", "inspect", "--format", "{{.Id}}", *images])
    try:
        for argv in checks:
            result = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
            if result.returncode != 0 or not result.stdout.strip():
                return False
    except (OSError, subprocess.TimeoutExpired):
        return False
    return True


@contextmanager
def local_endpoints(root: Path, settings: InfraSettings | None = None) -> Iterator[Endpoints]:
    """Start Kafka and Redis as local processes under ``root``; stop them on exit.

    A part whose address is in the environment is not started but waited for.
    """
    infra = LocalInfra(root, settings=settings)
    status = infra.up()
    try:
        sources = sorted({status.kafka.source, status.redis.source})
        yield Endpoints(status.kafka_bootstrap, status.redis_url, "+".join(sources))
    finally:
        infra.down()
