"""``FLYWHEEL_HOME``: the one folder of everything local (mesh state and logs, the local Kafka
and Redis, the registry, feature snapshots, training data, demo output).

Looked up in this order, so that a command run from a sub-folder finds the mesh started
above it, the way git finds its repository:

1. ``$FLYWHEEL_HOME`` when set;
2. the nearest ``.flywheel`` folder, in the current folder or one of its parents, that holds
   a running mesh's state (``mesh.json``) or the local infrastructure's (``infra/state.json``);
3. ``./.flywheel``: where ``flywheel up`` creates a new one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

FOLDER = ".flywheel"
#: Files whose presence says "a mesh (or its infrastructure) was started from here".
MARKERS = ("mesh.json", "infra/state.json")


def home_dir(environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> Path:
    """The resolved home folder (absolute; it need not exist)."""
    env = os.environ if environ is None else environ
    given = env.get("FLYWHEEL_HOME")
    if given:
        return Path(given).expanduser().resolve()
    start = (cwd or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        candidate = folder / FOLDER
        if any((candidate / marker).is_file() for marker in MARKERS):
            return candidate
    return start / FOLDER
