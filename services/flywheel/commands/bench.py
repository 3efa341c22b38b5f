"""``flywheel bench <target> [--json]``: the benchmarks, one module each.

``flywheel.bench.<target>`` exposes ``run(args) -> dict`` (the result: ``bench``, ``metric``,
``value``, ``baseline``, ``ratio``, ``ok``... or a ``results`` list of such) and, optionally,
``add_arguments(parser)`` for its own options. The dispatcher knows no target by name: the
targets are the modules of the ``flywheel.bench`` package.

A target finds the broker and Redis of the running mesh (``flywheel.commands.context``): the
resolved addresses are exported as FLYWHEEL_* variables before it runs, the one place they
are set, so its settings and the service processes it starts read the same ones. A target
that needs neither says so with ``NEEDS = ()`` (the default is ``("kafka", "redis")``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil

from flywheel.commands import CommandError

DEFAULT_NEEDS = ("kafka", "redis")


def targets() -> list[str]:
    """The modules of ``flywheel.bench`` that expose ``run`` (helpers such as ``report``
    do not). Imports them: bench modules keep their heavy imports inside ``run``."""
    try:
        package = importlib.import_module("flywheel.bench")
    except ImportError:
        return []
    found = []
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"flywheel.bench.{info.name}")
        if callable(getattr(module, "run", None)):
            found.append(info.name)
    return sorted(found)


def register(subparsers: argparse._SubParsersAction) -> None:
    from flywheel.commands.context import LOOKUP_HELP

    bench = subparsers.add_parser(
        "bench",
        help="run a benchmark: ours against its baseline, measured in the same run",
        description="Prints a table, or with --json one JSON object as the last line "
        "(bench, metric, value, baseline, baseline_name, ratio, target, better, ok). "
        "Targets that need Kafka and Redis use the running mesh's. " + LOOKUP_HELP,
    )
    bench.add_argument("target", help="what to measure: a module of flywheel.bench "
                       "(an unknown name lists them)")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_argument("options", nargs=argparse.REMAINDER,
                       help="the target's own options (`flywheel bench <target> --help`)")
    bench.set_defaults(handler=_bench, parser=bench)


def _bench(args: argparse.Namespace) -> int:
    known = targets()
    if args.target not in known:  # checked first: the name becomes an import path
        raise CommandError(f"unknown benchmark {args.target!r}; targets: {', '.join(known) or 'none'}",
                           exit_code=2)
    module = importlib.import_module(f"flywheel.bench.{args.target}")
    # Options after the target belong to it (plus --json, wherever it is written).
    parser = argparse.ArgumentParser(prog=f"flywheel bench {args.target}")
    parser.add_argument("--json", action="store_true", default=args.json,
                        help="print one JSON object")
    add_arguments = getattr(module, "add_arguments", None)
    if add_arguments is not None:
        add_arguments(parser)
    options = parser.parse_args(args.options)
    options.target = args.target
    needs = tuple(getattr(module, "NEEDS", DEFAULT_NEEDS))
    if needs:
        from flywheel.commands.context import mesh_context

        os.environ.update(mesh_context(*needs).environ())
    result = module.run(options)
    from flywheel.bench.report import emit

    emit(result, options.json)
    results = result.get("results") or [result]
    return 0 if all(r.get("ok", False) for r in results) else 1
