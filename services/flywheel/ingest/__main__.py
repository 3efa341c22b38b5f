"""`python -m flywheel.ingest`: settings from FLYWHEEL_* and FLYWHEEL_INGEST_*; serves until
SIGTERM."""

from flywheel.common.service import run_service
from flywheel.ingest.app import IngestApp
from flywheel.ingest.settings import IngestSettings


def main() -> None:
    run_service("ingest", IngestSettings, IngestApp)


if __name__ == "__main__":
    main()
