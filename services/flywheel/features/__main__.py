"""`python -m flywheel.features`: settings from FLYWHEEL_* / FLYWHEEL_FEATURES_*, runs until
SIGTERM."""

from __future__ import annotations

import asyncio

from flywheel.common.grpc.server import run_until_signalled
from flywheel.common.logging import configure_logging
from flywheel.common.settings import CommonSettings
from flywheel.features.app import FeaturesApp
from flywheel.features.settings import FeaturesSettings


def main() -> None:
    common = CommonSettings()
    configure_logging("features", common.log_level, common.log_json)
    settings = FeaturesSettings()
    asyncio.run(_serve(common, settings))


async def _serve(common: CommonSettings, settings: FeaturesSettings) -> None:
    # Built inside the running loop: grpc.aio binds its server to the loop it was made in.
    app = FeaturesApp(common, settings)
    await run_until_signalled(app.start, app.stop)


if __name__ == "__main__":
    main()
