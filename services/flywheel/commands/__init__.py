"""Command groups of the ``flywheel`` CLI, one module each, each exposing ``register``.

A module registers its subcommands on the argparse ``subparsers`` it is given and sets
``handler=<callable(args) -> int>`` on each leaf parser (``parser.set_defaults``). Raising
``CommandError`` ends the command with its one-line message and exit code, no traceback.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager


class CommandError(Exception):
    """A failure to report to the user as one line (plus optional indented detail)."""

    def __init__(self, message: str, *, detail: str = "", exit_code: int = 1) -> None:
        super().__init__(message)
        self.detail = detail
        self.exit_code = exit_code


def add_json_flag(parser: argparse.ArgumentParser, help: str = "print one JSON object") -> None:
    parser.add_argument("--json", action="store_true", help=help)


@contextmanager
def reported(*error_types: type[Exception]) -> Iterator[None]:
    """Turns the given domain errors (with an optional `.detail`) into a `CommandError`."""
    try:
        yield
    except error_types as exc:
        raise CommandError(str(exc), detail=getattr(exc, "detail", "") or "") from None
