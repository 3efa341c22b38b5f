"""Errors of the local infrastructure, each with a message fit for one line of a CLI."""

from __future__ import annotations

INSTALL_HINTS = {
    "java": "apt-get install openjdk-17-jre-headless, or set JAVA_HOME to a JDK 17",
    "mvn": "apt-get install maven",
    "redis-server": "apt-get install redis-server",
}


class InfraError(Exception):
    """Something the local infrastructure could not do.

    ``str(error)`` is one line; ``detail`` holds what helps to diagnose it (the tail of a
    process log, a command's output), printed below that line by the CLI.
    """

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


class MissingBinaryError(InfraError):
    """A program the local infrastructure runs is not installed."""

    def __init__(self, missing: dict[str, str]) -> None:
        """``missing`` maps the role (``java``, ``mvn``, ``redis-server``) to what was sought."""
        self.missing = dict(missing)
        parts = [
            f"{program} (install with: {INSTALL_HINTS.get(role, 'see README')})"
            for role, program in missing.items()
        ]
        noun = "program" if len(missing) == 1 else "programs"
        super().__init__(f"required {noun} not found on PATH: " + "; ".join(parts))
