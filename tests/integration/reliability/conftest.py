"""Fixtures of the fault-injection tests.

``private_broker`` (module): a broker of the module's own, started with ``LocalInfra`` in a
temporary folder on free ports, so a test may SIGKILL or SIGSTOP it without touching the
session's broker. Stopped at the end of the module, also when a test failed (a broker left
SIGSTOPped is resumed first so that it can be stopped).
``common`` (function): settings under the test's own namespace; ``champion`` (function): the
``churn`` champion registered in the test's registry.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from reliability_kit import N_FEATURES, PrivateBroker

from flywheel.common.registry import CHAMPION, ModelRegistry
from flywheel.common.settings import CommonSettings
from flywheel.inference.testing_models import feature_names, logistic_regression_onnx

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


@pytest.fixture
def champion(common) -> None:
    """`churn` (a logistic regression over N_FEATURES features of `customer`) registered as
    the champion in the test's registry."""
    registry = ModelRegistry(common.registry_uri)
    meta = registry.register(
        "churn", logistic_regression_onnx(N_FEATURES, seed=3), task=1, entity_type="customer",
        feature_names=feature_names(N_FEATURES), output_names=["label", "probabilities"],
    )
    registry.promote("churn", meta.version, CHAMPION)
