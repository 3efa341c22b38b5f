"""`python -m flywheel.training`: reads settings once, runs the service until SIGTERM."""

from __future__ import annotations

import asyncio

from flywheel.common.grpc.server import run_until_signalled
from flywheel.common.logging import configure_logging
from flywheel.common.settings import CommonSettings
from flywheel.training.app import TrainingApp
from flywheel.training.settings import TrainingSettings


def main() -> None:
    common = CommonSettings()
    settings = TrainingSettings()
    configure_logging("training", common.log_level, common.log_json)
    app = TrainingApp(common, settings)
    asyncio.run(run_until_signalled(app.start, app.stop))


if __name__ == "__main__":
    main()
