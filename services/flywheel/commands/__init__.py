"""Command groups of the ``flywheel`` CLI, one module each, each exposing ``register``.

A module registers its subcommands on the argparse ``subparsers`` it is given and sets
``handler=<callable(args) -> int>`` on each leaf parser (``parser.set_defaults``). Raising
``CommandError`` ends the command with its one-line message and exit code, no traceback.
"""

from __future__ import annotations


class CommandError(Exception):
    """A failure to report to the user as one line (plus optional indented detail)."""

    def __init__(self, message: str, *, detail: str = "", exit_code: int = 1) -> None:
        super().__init__(message)
        self.detail = detail
        self.exit_code = exit_code
