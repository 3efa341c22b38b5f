"""The benchmark report: ratio against a baseline measured in the same run, and its output.

`result(...)` builds one headline object; `combined(...)` groups several (ok only when all
are). `emit(...)` prints a readable table, or with `as_json` one JSON object as the last line.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from typing import Any


def result(
    bench: str,
    metric: str,
    value: float,
    baseline: float,
    baseline_name: str,
    target: float,
    better: str,
    **detail: Any,
) -> dict[str, Any]:
    if better not in ("higher", "lower"):
        raise ValueError("better is 'higher' or 'lower'")
    ratio = value / baseline if baseline else math.inf
    ok = ratio >= target if better == "higher" else ratio <= target
    return {
        "bench": bench,
        "metric": metric,
        "value": value,
        "baseline": baseline,
        "baseline_name": baseline_name,
        "ratio": ratio,
        "target": target,
        "better": better,
        "ok": bool(ok),
        **detail,
    }


def combined(bench: str, results: list[dict[str, Any]], **detail: Any) -> dict[str, Any]:
    """Several headline ratios: `results` holds each, `ok` is true only when all are."""
    return {"bench": bench, "ok": all(r["ok"] for r in results), "results": results, **detail}


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def emit(outcome: dict[str, Any], as_json: bool = False, stream: Any = None) -> None:
    out = stream or sys.stdout
    if as_json:
        print(json.dumps(outcome, default=str), file=out)
        return
    headlines = outcome.get("results") or [outcome]
    print(f"bench {outcome['bench']}: {'OK' if outcome['ok'] else 'BELOW TARGET'}", file=out)
    columns = ("metric", "value", "baseline", "baseline_name", "ratio", "target", "ok")
    rows = [[_fmt(h.get(c, "")) for c in columns] for h in headlines]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)), file=out)
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)), file=out)
    skip = {"bench", "ok", "results", *columns, "better"}
    for key, value in outcome.items():
        if key not in skip:
            print(f"  {key}: {json.dumps(value, default=str)}", file=out)


def with_defaults(args: Any, add_arguments: Any) -> Any:
    """`args` with every option that `add_arguments` declares and `args` lacks set to its
    declared default: a bench's `run` called directly (not from its command line) reads its
    defaults from the one place they are written."""
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    for name, value in vars(parser.parse_args([])).items():
        if not hasattr(args, name):
            setattr(args, name, value)
    return args


def standalone(target: str, add_arguments: Any, run: Any) -> None:
    """`python -m flywheel.bench.<target>`: the same as `flywheel bench <target>`."""
    import argparse

    parser = argparse.ArgumentParser(prog=f"python -m flywheel.bench.{target}")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_arguments(parser)
    args = parser.parse_args()
    emit(run(args), args.json)
