"""The inference service in-process on free ports, under the test's own namespace, with a
registry in the test's temporary folder. Helpers live in inference_support.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from inference_support import N_FEATURES, SPEC_PATH, register, start_inference

from flywheel.common.grpc.client import wait_for_serving_async
from flywheel.common.registry import ModelRegistry
from flywheel.common.settings import CommonSettings
from flywheel.features.app import FeaturesApp
from flywheel.features.settings import FeaturesSettings
from flywheel.inference.app import InferenceApp
from flywheel.inference.settings import InferenceSettings
from flywheel.inference.testing_models import logistic_regression_onnx


@pytest.fixture(scope="session")


def model_v1() -> bytes:
    return logistic_regression_onnx(N_FEATURES, seed=7)


@pytest.fixture(scope="session")


def model_v2() -> bytes:
    return logistic_regression_onnx(N_FEATURES, seed=11)


@pytest.fixture


def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "registry")


@pytest.fixture


def common(names, kafka_bootstrap: str, redis_url: str, registry: ModelRegistry) -> CommonSettings:
    return CommonSettings(
        namespace=names.namespace, kafka_bootstrap=kafka_bootstrap, redis_url=redis_url,
        spec_path=SPEC_PATH, registry_uri=str(registry.root), log_json=False,
    )


@pytest.fixture


def inference_settings() -> InferenceSettings:
    return InferenceSettings(grpc_port=0, metrics_port=0)


@pytest.fixture


def churn(registry: ModelRegistry, model_v1: bytes):
    """churn v1, the champion, in the test's registry."""
    return register(registry, model_v1)


@pytest.fixture


async def inference(churn, common, inference_settings) -> AsyncIterator[InferenceApp]:
    app = await start_inference(common, inference_settings)
    try:
        yield app
    finally:
        await app.stop()


@pytest.fixture


async def feature_store(common, tmp_path):
    """The real feature store, in-process on its own port, under the test's namespace."""
    app = FeaturesApp(common, FeaturesSettings(grpc_port=0, metrics_port=0,
                                               snapshot_dir=tmp_path / "snapshots"))
    await app.start()
    try:
        await wait_for_serving_async(app.target, 60.0)
        yield app
    finally:
        await app.stop()
