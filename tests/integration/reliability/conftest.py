"""Fixtures of the fault-injection tests.

``private_broker`` (module): a broker of the module's own, started with ``LocalInfra`` in a
temporary folder on free ports, so a test may SIGKILL or SIGSTOP it without touching the
session's broker. Stopped at the end of the module, also when a test failed (a broker left
SIGSTOPped is resumed first so that it can be stopped).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from reliability_kit import PrivateBroker

from flywheel.common.settings import CommonSettings

SPEC_PATH = Path(__file__).resolve().parents[3] / "flywheel.yaml"


@pytest.fixture(scope="module")
def private_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateBroker]:
    broker = PrivateBroker(tmp_path_factory.mktemp("private-broker"))
    try:
        broker.up()
        yield broker
    finally:
        broker.down()


@pytest.fixture
def common(names, kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> CommonSettings:
    """Settings of a service under the test's own namespace on the session's broker/Redis."""
    return CommonSettings(
        namespace=names.namespace, kafka_bootstrap=kafka_bootstrap, redis_url=redis_url,
        spec_path=SPEC_PATH, registry_uri=str(tmp_path / "registry"), log_json=False,
    )
