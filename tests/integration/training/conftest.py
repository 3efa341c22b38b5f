"""Fixtures of the training tests: an in-process training service per test."""

from __future__ import annotations

import pytest
from training_kit import SwitchTrainer, write_spec

from flywheel.common.settings import CommonSettings
from flywheel.training.app import TrainingApp
from flywheel.training.settings import TrainingSettings


@pytest.fixture
async def make_app(names, kafka_bootstrap, redis_url, tmp_path):
    started = []

    async def make(triggers: str, *, spec_trainer: bool = False, **spec) -> TrainingApp:
        """A training app over the test spec (see write_spec for `spec`); its trainer is the
        switchable logistic one, or with `spec_trainer` the one the spec declares."""
        common = CommonSettings(
            namespace=names.namespace, kafka_bootstrap=kafka_bootstrap, redis_url=redis_url,
            spec_path=write_spec(tmp_path / "spec.yaml", triggers, **spec),
            registry_uri=str(tmp_path / "registry"), log_json=False,
        )
        settings = TrainingSettings(grpc_port=0, metrics_port=0, data_dir=tmp_path / "data",
                                    check_interval_s=0.2)
        app = TrainingApp(common, settings, trainer=None if spec_trainer else SwitchTrainer())
        await app.start()
        started.append(app)
        return app

    yield make
    for app in started:
        await app.stop()
