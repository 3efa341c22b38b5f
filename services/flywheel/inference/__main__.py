"""`python -m flywheel.inference`: reads settings once, serves until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio

from flywheel.common.grpc.server import run_until_signalled
from flywheel.common.logging import configure_logging
from flywheel.common.settings import CommonSettings
from flywheel.inference.app import InferenceApp
from flywheel.inference.settings import InferenceSettings


def main() -> None:
    common = CommonSettings()
    settings = InferenceSettings()
    configure_logging("inference", common.log_level, common.log_json)
    app = InferenceApp(common, settings)
    asyncio.run(run_until_signalled(app.start, app.stop))


if __name__ == "__main__":
    main()
