"""The ingest service in-process on a free port, under the test's own namespace."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from flywheel.common.grpc.client import aio_channel, wait_for_serving_async
from flywheel.common.settings import CommonSettings
from flywheel.common.spec import load_spec
from flywheel.ingest.app import IngestApp
from flywheel.ingest.settings import IngestSettings
from flywheel.v1 import ingest_pb2_grpc

SPEC_PATH = Path(__file__).resolve().parents[3] / "flywheel.yaml"


@pytest.fixture
def common(names, kafka_bootstrap: str, redis_url: str) -> CommonSettings:
    return CommonSettings(
        namespace=names.namespace, kafka_bootstrap=kafka_bootstrap, redis_url=redis_url,
        spec_path=SPEC_PATH, log_json=False, kafka_timeout_s=10.0,
    )


@pytest.fixture(scope="session")
def customer():
    return load_spec(SPEC_PATH).entity("customer")


@pytest.fixture
async def ingest_app(common: CommonSettings) -> AsyncIterator[IngestApp]:
    app = IngestApp(common, IngestSettings(grpc_port=0, metrics_port=0))
    await app.start()
    try:
        await wait_for_serving_async(app.target, 30.0)
        yield app
    finally:
        await app.stop()


@pytest.fixture
async def ingest(ingest_app: IngestApp) -> AsyncIterator[ingest_pb2_grpc.IngestServiceStub]:
    channel = aio_channel(ingest_app.target)
    yield ingest_pb2_grpc.IngestServiceStub(channel)
    await channel.close()
