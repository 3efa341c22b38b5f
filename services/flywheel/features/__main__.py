"""`python -m flywheel.features`: settings from FLYWHEEL_* and FLYWHEEL_FEATURES_*; serves until
SIGTERM."""

from flywheel.common.service import run_service
from flywheel.features.app import FeaturesApp
from flywheel.features.settings import FeaturesSettings


def main() -> None:
    run_service("features", FeaturesSettings, FeaturesApp)


if __name__ == "__main__":
    main()
