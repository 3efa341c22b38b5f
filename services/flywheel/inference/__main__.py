"""`python -m flywheel.inference`: settings from FLYWHEEL_* and FLYWHEEL_INFERENCE_*; serves until
SIGTERM."""

from flywheel.common.service import run_service
from flywheel.inference.app import InferenceApp
from flywheel.inference.settings import InferenceSettings


def main() -> None:
    run_service("inference", InferenceSettings, InferenceApp)


if __name__ == "__main__":
    main()
