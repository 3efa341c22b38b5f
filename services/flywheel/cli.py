"""The ``flywheel`` command.

Each command group lives in ``flywheel.commands.<name>`` and exposes ``register(subparsers)``;
adding a group is one line in ``COMMAND_MODULES``. Group modules are imported only when the
parser is built, and keep their heavy imports inside their handlers, so ``flywheel --help``
stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from flywheel.commands import CommandError

COMMAND_MODULES: list[str] = [
    "infra",
    "mesh",
    "models",
    "runs",
    "demo",
    "bench",
    "replay",
]


def build_parser() -> argparse.ArgumentParser:
    from flywheel.commands.context import LOOKUP_HELP

    parser = argparse.ArgumentParser(
        prog="flywheel",
        description="Flywheel Mesh: a data flywheel of five gRPC services over Kafka.",
        epilog=LOOKUP_HELP,
    )
    subparsers = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"flywheel.commands.{name}")
        except ImportError as exc:
            # One broken group must not take the others down (`infra down` above all).
            _register_unavailable(subparsers, name, exc)
            continue
        module.register(subparsers)
    return parser


def _register_unavailable(subparsers, name: str, error: ImportError) -> None:
    def fail(_args: argparse.Namespace) -> int:
        raise CommandError(f"the `{name}` commands are unavailable: {error}")

    stub = subparsers.add_parser(name, help=f"(unavailable: {error})", add_help=False)
    stub.add_argument("rest", nargs=argparse.REMAINDER)
    stub.set_defaults(handler=fail)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns (and, as a console script, exits with) its exit code."""
    debug = os.environ.get("FLYWHEEL_DEBUG", "") not in ("", "0")
    args = build_parser().parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:  # a group named without its subcommand
        args.parser.print_help(sys.stderr)
        return 2
    try:
        return int(handler(args) or 0)
    except CommandError as exc:
        _report(str(exc), exc.detail)
        return exc.exit_code
    except KeyboardInterrupt:
        _report("interrupted")
        return 130
    except Exception as exc:  # the user gets one line; FLYWHEEL_DEBUG=1 shows the rest
        if debug:
            raise
        _report(f"unexpected {type(exc).__name__}: {exc} (FLYWHEEL_DEBUG=1 shows the traceback)")
        return 1


def _report(message: str, detail: str = "") -> None:
    print(f"flywheel: error: {message}", file=sys.stderr)
    if detail:
        print("\n".join(f"  {line}" for line in detail.splitlines()), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
