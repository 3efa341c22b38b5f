"""`python -m flywheel.feedback`: reads settings once, runs the service until SIGTERM."""

from __future__ import annotations

import asyncio

from flywheel.common.grpc.server import run_until_signalled
from flywheel.common.logging import configure_logging
from flywheel.common.settings import CommonSettings
from flywheel.feedback.app import FeedbackApp
from flywheel.feedback.settings import FeedbackSettings


def main() -> None:
    common = CommonSettings()
    settings = FeedbackSettings()
    configure_logging("feedback", common.log_level, common.log_json)
    app = FeedbackApp(common, settings)
    asyncio.run(run_until_signalled(app.start, app.stop))


if __name__ == "__main__":
    main()
