"""The feature store (and ingest, which feeds it) in-process on free ports, under the test's
own namespace; snapshots in the test's temporary folder."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from flywheel.common.grpc.client import aio_channel, wait_for_serving_async
from flywheel.common.settings import CommonSettings
from flywheel.common.spec import load_spec
from flywheel.features.app import FeaturesApp
from flywheel.features.settings import FeaturesSettings
from flywheel.ingest.app import IngestApp
from flywheel.ingest.settings import IngestSettings
from flywheel.v1 import features_pb2_grpc, ingest_pb2_grpc

SPEC_PATH = Path(__file__).resolve().parents[3] / "flywheel.yaml"


@pytest.fixture
def common(names, kafka_bootstrap: str, redis_url: str) -> CommonSettings:
    return CommonSettings(
        namespace=names.namespace, kafka_bootstrap=kafka_bootstrap, redis_url=redis_url,
        spec_path=SPEC_PATH, log_json=False,
    )


@pytest.fixture(scope="session")
def customer():
    return load_spec(SPEC_PATH).entity("customer")


@pytest.fixture
def features_settings(tmp_path: Path) -> FeaturesSettings:
    return FeaturesSettings(grpc_port=0, metrics_port=0, snapshot_dir=tmp_path / "snapshots")


@pytest.fixture
async def features_app(
    common: CommonSettings, features_settings: FeaturesSettings
) -> AsyncIterator[FeaturesApp]:
    app = FeaturesApp(common, features_settings)
    await app.start()
    try:
        await wait_for_serving_async(app.target, 60.0)
        yield app
    finally:
        await app.stop()


@pytest.fixture
async def features(features_app: FeaturesApp) -> AsyncIterator[features_pb2_grpc.FeatureStoreServiceStub]:
    channel = aio_channel(features_app.target)
    yield features_pb2_grpc.FeatureStoreServiceStub(channel)
    await channel.close()


@pytest.fixture
async def ingest(common: CommonSettings) -> AsyncIterator[ingest_pb2_grpc.IngestServiceStub]:
    app = IngestApp(common, IngestSettings(grpc_port=0, metrics_port=0))
    await app.start()
    channel = aio_channel(app.target)
    try:
        await wait_for_serving_async(app.target, 30.0)
        yield ingest_pb2_grpc.IngestServiceStub(channel)
    finally:
        await channel.close()
        await app.stop()


async def poll_until(check: Callable, timeout_s: float, what: str, interval_s: float = 0.2):
    """Awaits `check()` until it returns something truthy; fails after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval_s)
    raise AssertionError(f"{what}: not reached within {timeout_s}s (last: {last!r})")


@pytest.fixture
def poll() -> Callable:
    return poll_until
