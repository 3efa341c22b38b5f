"""Where the local infrastructure keeps its files, and which programs it runs.

Read once from the environment (``InfraSettings.from_env``: the ``FLYWHEEL_*`` variables of
``InfraEnvironment`` through pydantic-settings, resolved against the home folder), frozen,
passed down.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from flywheel.common.environ import read_settings
from flywheel.infra.home import home_dir

#: The pom whose dependency copy fetches the broker jars: services/../deploy/kafka/pom.xml.
SOURCE_POM = Path(__file__).resolve().parents[3] / "deploy" / "kafka" / "pom.xml"


class InfraEnvironment(BaseSettings):
    """The ``FLYWHEEL_*`` variables the local infrastructure reads (an empty one is unset)."""

    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_", frozen=True, extra="ignore",
                                      env_ignore_empty=True)

    kafka_jars_dir: Path | None = Field(
        None, description="Cache of the Kafka broker jars fetched by `flywheel infra fetch` "
        "(unset: `$XDG_CACHE_HOME` or `~/.cache`, then `flywheel/kafka-<version>/lib`).")
    kafka_bootstrap: str | None = Field(
        None, description="Set: `flywheel infra up` starts no broker and reports this one "
        "with source `external`.")
    redis_url: str | None = Field(
        None, description="Set: `flywheel infra up` starts no Redis and reports this one with "
        "source `external`.")


@dataclass(frozen=True)
class InfraSettings:
    """Settings of the local Kafka broker and Redis server.

    root
        Folder for data, logs and the state file: ``<home>/infra``, where home is
        ``$FLYWHEEL_HOME`` or the nearest ``.flywheel`` (see ``flywheel.infra.home``).
    jars_dir
        Cache of the broker jars, shared by every root (``$FLYWHEEL_KAFKA_JARS_DIR``, else
        ``~/.cache/flywheel/kafka-<version>/lib``).
    pom
        The pom that fetches the jars; its ``kafka.version`` property names the version.
    external_kafka_bootstrap, external_redis_url
        ``$FLYWHEEL_KAFKA_BOOTSTRAP`` / ``$FLYWHEEL_REDIS_URL``: when set, that part is not
        started; the given address is used and reported with source ``external``.
    java, mvn, redis_server
        The programs, as names looked up on PATH or as paths (``java`` follows JAVA_HOME).
    tls_dir
        The secured infrastructure's material (``flywheel.infra.secure``): ``<home>/tls``.
    """

    root: Path
    jars_dir: Path
    pom: Path = SOURCE_POM
    external_kafka_bootstrap: str | None = None
    external_redis_url: str | None = None
    java: str = "java"
    mvn: str = "mvn"
    redis_server: str = "redis-server"
    host: str = "127.0.0.1"
    kafka_heap: str = "512m"
    start_timeout_s: float = 120.0
    stop_timeout_s: float = 30.0
    tls_dir: Path | None = None

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, cwd: Path | None = None, **overrides
    ) -> InfraSettings:
        """Settings from ``FLYWHEEL_*`` variables (``InfraEnvironment``), ``FLYWHEEL_HOME``,
        ``JAVA_HOME`` and ``XDG_CACHE_HOME``; keyword ``overrides`` win over them."""
        env = os.environ if environ is None else environ
        given = read_settings(InfraEnvironment, env)
        home = home_dir(env, cwd)
        pom = Path(overrides.pop("pom", SOURCE_POM))
        jars = given.kafka_jars_dir
        java_home = env.get("JAVA_HOME")
        java = "java"
        if java_home and (Path(java_home) / "bin" / "java").is_file():
            java = str(Path(java_home) / "bin" / "java")
        settings = cls(
            root=home / "infra",
            jars_dir=jars.expanduser().resolve() if jars else default_jars_dir(pom, env),
            pom=pom,
            external_kafka_bootstrap=given.kafka_bootstrap,
            external_redis_url=given.redis_url,
            java=java,
            tls_dir=home / "tls",
        )
        return replace(settings, **overrides)

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def secure_dir(self) -> Path:
        """Where a secured infrastructure keeps its CA, certificates and secrets:
        ``$FLYWHEEL_HOME/tls`` (``<root>/tls`` for a root given alone)."""
        return self.tls_dir or self.root / "tls"

    @property
    def log4j_config(self) -> Path:
        return self.pom.parent / "log4j2.xml"


def pom_kafka_version(pom: Path) -> str:
    """The ``kafka.version`` property of the pom (``unknown`` when it cannot be read)."""
    try:
        match = re.search(r"<kafka\.version>\s*([^<\s]+)\s*</kafka\.version>", pom.read_text())
    except OSError:
        return "unknown"
    return match.group(1) if match else "unknown"


def default_jars_dir(pom: Path = SOURCE_POM, environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CACHE_HOME/flywheel/kafka-<version>/lib``, ``~/.cache`` when XDG is unset."""
    env = os.environ if environ is None else environ
    cache = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return cache / "flywheel" / f"kafka-{pom_kafka_version(pom)}" / "lib"
