"""`python -m flywheel.feedback`: settings from FLYWHEEL_* and FLYWHEEL_FEEDBACK_*; serves until
SIGTERM."""

from flywheel.common.service import run_service
from flywheel.feedback.app import FeedbackApp
from flywheel.feedback.settings import FeedbackSettings


def main() -> None:
    run_service("feedback", FeedbackSettings, FeedbackApp)


if __name__ == "__main__":
    main()
