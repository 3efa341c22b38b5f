"""`python -m flywheel.training`: settings from FLYWHEEL_* and FLYWHEEL_TRAINING_*; serves until
SIGTERM."""

from flywheel.common.service import run_service
from flywheel.training.app import TrainingApp
from flywheel.training.settings import TrainingSettings


def main() -> None:
    run_service("training", TrainingSettings, TrainingApp)


if __name__ == "__main__":
    main()
