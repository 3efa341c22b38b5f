"""Shared by every test: the project's pytest plugin, and markers that follow the folders."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["flywheel.testing.fixtures"]

_TESTS = Path(__file__).resolve().parent
# A test under tests/<folder>/ gets the marker of its folder, so `pytest -m "not integration"`
# selects the unit tests without every module repeating its marker.
_FOLDER_MARKERS = {"integration": pytest.mark.integration, "e2e": pytest.mark.e2e}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        try:
            folder = item.path.resolve().relative_to(_TESTS).parts[0]
        except (ValueError, IndexError):
            continue
        marker = _FOLDER_MARKERS.get(folder)
        if marker is not None:
            item.add_marker(marker)
