"""The pytest plugin of the project: real Kafka and Redis for the whole session.

Load it with ``pytest_plugins = ["flywheel.testing.fixtures"]`` in a conftest. Fixtures:

``infra`` (session)
    ``Endpoints(kafka_bootstrap, redis_url, source)`` of a ready broker and Redis. Taken,
    in this order, from FLYWHEEL_KAFKA_BOOTSTRAP + FLYWHEEL_REDIS_URL (``external``); from
    containers when testcontainers is installed and a Docker engine answers within 3 s with
    both images already there (``testcontainers``); else from local processes started by
    ``flywheel.infra`` under a pytest temporary folder (``local``), stopped at the end of the
    session.
``kafka_bootstrap``, ``redis_url`` (session)
    The two addresses alone.
``names`` (function)
    A fresh ``Names``: ``names.namespace`` (``t`` + 8 hex digits), ``names.topic(base)``,
    ``names.group(base)``, ``names.key(base)``.
``make_topic`` (function)
    ``make_topic(base, partitions=3, config=None) -> name``: creates ``names.topic(base)``
    and waits for its leaders; deletes the test's topics afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping

import pytest

from flywheel.infra import InfraError, InfraSettings
from flywheel.testing.containers import KAFKA_IMAGE, REDIS_IMAGE
from flywheel.testing.endpoints import Endpoints, docker_answers, local_endpoints
from flywheel.testing.kafka import create_topics, delete_topics
from flywheel.testing.names import Names


@pytest.fixture(scope="session")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoints]:
    settings = InfraSettings.from_env()
    given = settings.external_kafka_bootstrap or settings.external_redis_url
    try:
        if not given and docker_answers(images=(KAFKA_IMAGE, REDIS_IMAGE)):
            from flywheel.testing.containers import container_endpoints

            with container_endpoints() as endpoints:
                yield endpoints
            return
        # Local processes; a part given by the environment is only waited for.
        with local_endpoints(tmp_path_factory.mktemp("infra"), settings) as endpoints:
            yield endpoints
    except InfraError as exc:
        pytest.fail(f"infrastructure for the tests: {exc}\n{exc.detail}", pytrace=False)


@pytest.fixture(scope="session")
def kafka_bootstrap(infra: Endpoints) -> str:
    return infra.kafka_bootstrap


@pytest.fixture(scope="session")
def redis_url(infra: Endpoints) -> str:
    return infra.redis_url


@pytest.fixture
def names() -> Names:
    return Names.fresh()


@pytest.fixture
def make_topic(kafka_bootstrap: str, names: Names) -> Iterator[Callable[..., str]]:
    created: list[str] = []

    def make(base: str, partitions: int = 3, config: Mapping[str, str] | None = None) -> str:
        topic = names.topic(base)
        create_topics(kafka_bootstrap, [topic], partitions=partitions, config=config)
        created.append(topic)
        return topic

    yield make
    # A test that already deleted its topic is fine.
    with contextlib.suppress(Exception):
        delete_topics(kafka_bootstrap, created)
