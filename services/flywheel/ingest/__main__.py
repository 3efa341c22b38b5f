"""`python -m flywheel.ingest`: settings from FLYWHEEL_* / FLYWHEEL_INGEST_*, runs until SIGTERM."""

from __future__ import annotations

import asyncio

from flywheel.common.grpc.server import run_until_signalled
from flywheel.common.logging import configure_logging
from flywheel.common.settings import CommonSettings
from flywheel.ingest.app import IngestApp
from flywheel.ingest.settings import IngestSettings


def main() -> None:
    common = CommonSettings()
    configure_logging("ingest", common.log_level, common.log_json)
    settings = IngestSettings()
    asyncio.run(_serve(common, settings))


async def _serve(common: CommonSettings, settings: IngestSettings) -> None:
    # Built inside the running loop: grpc.aio binds its server to the loop it was made in.
    app = IngestApp(common, settings)
    await run_until_signalled(app.start, app.stop)


if __name__ == "__main__":
    main()
