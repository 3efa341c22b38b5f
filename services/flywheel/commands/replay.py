"""``flywheel replay``: backtest the flywheel on a labeled history through the running mesh."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from flywheel.commands import CommandError

DEFAULT_WORLD_MODEL = "churn"  # the model of the demo's spec, which the worlds' columns fit


def register(subparsers: argparse._SubParsersAction) -> None:
    replay = subparsers.add_parser(
        "replay",
        help="backtest the flywheel on a labeled history through the running mesh",
        description="Streams a labeled history (Parquet or CSV) through the running mesh in "
        "file order, exactly as production would: each row ingested, predicted, its label "
        "returned after a delay (or never). Reports the prequential metric (test, then "
        "train) per window and overall, the versions promoted and refused, the rows needed "
        "to recover after each drift, and the same rows scored by the starting champion "
        "kept static. The mesh's spec decides how the model retrains. --world makes the "
        "history from the demo's synthetic worlds; with --write it only writes the file. "
        "Writes report.json and prequential.png under $FLYWHEEL_HOME/replay/.",
    )
    source = replay.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, metavar="FILE",
                        help="the labeled history: .parquet or .csv")
    source.add_argument("--world", choices=("linear", "nonlinear"),
                        help="make the history from a synthetic world instead")
    replay.add_argument("--model", help="the model of the spec to replay against (required "
                        f"with --data; {DEFAULT_WORLD_MODEL} with --world)")

    world = replay.add_argument_group("synthetic world (--world)")
    world.add_argument("--rows", type=int, default=40000, help="rows to make (default 40000)")
    world.add_argument("--drifts", type=int, default=2,
                       help="concept changes, evenly spaced (default 2)")
    world.add_argument("--seed", type=int, default=7,
                       help="seed of the world and of which labels are lost (default 7)")
    world.add_argument("--write", type=Path, metavar="FILE",
                       help="write the history to FILE (.parquet or .csv) and stop")

    columns = replay.add_argument_group("columns of the history")
    columns.add_argument("--label-column", default="label", help="default: label")
    columns.add_argument("--entity-column", default="entity_id",
                         help="default: entity_id (ids made from the row number when absent)")
    columns.add_argument("--time-column", default="event_time",
                         help="event times, when present (default: event_time; else the send time)")
    columns.add_argument("--drift-column", default="drift",
                         help="the concept's id per row, when present: a drift where it "
                         "changes (default: drift)")

    stream = replay.add_argument_group("streaming")
    stream.add_argument("--rate", type=float, default=200.0, help="rows per second (default 200)")
    stream.add_argument("--label-delay", type=float, default=1.0,
                        help="seconds before a row's label is returned (default 1)")
    stream.add_argument("--label-loss", type=float, default=0.0,
                        help="fraction of labels never returned (default 0)")
    stream.add_argument("--seed-rows", type=int, default=0,
                        help="train a linear model on the first N rows, register and promote it "
                        "as the starting champion, and stream the rest (default 0: the "
                        "current champion starts)")

    report = replay.add_argument_group("report")
    report.add_argument("--window", type=int, default=1000,
                        help="rows per reported window and per recovery window (default 1000)")
    report.add_argument("--drift-at", type=_rows, default=None, metavar="ROW[,ROW...]",
                        help="rows where the concept changes (instead of the drift column)")
    report.add_argument("--recovery-tolerance", type=float, default=0.05,
                        help="recovered when the window metric is back within this fraction "
                        "of its pre-drift level (default 0.05)")
    report.add_argument("--json", action="store_true",
                        help="print the report as one JSON object (the last line of stdout)")
    replay.set_defaults(handler=_replay)


def _rows(text: str) -> list[int]:
    try:
        rows = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: rows are integers, comma-separated") from None
    if any(row <= 0 for row in rows):
        raise argparse.ArgumentTypeError("drift rows are positive")
    return rows


def _replay(args: argparse.Namespace) -> int:
    if args.write is not None:
        return _write_world(args)
    import asyncio

    from flywheel.commands.demo import find_mesh
    from flywheel.common.errors import FlywheelError
    from flywheel.common.spec import load_spec
    from flywheel.demo.liveness import MeshGone, MeshUnavailable
    from flywheel.demo.progress import ProgressLine
    from flywheel.replay.history import Columns, HistoryError, from_table, read_table
    from flywheel.replay.run import ReplayConfig, ReplayRun, Target

    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    model = args.model or (DEFAULT_WORLD_MODEL if args.world else None)
    if model is None:
        raise CommandError("--model is required with --data", exit_code=2)
    try:
        config = ReplayConfig(
            model=model, rate=args.rate, label_delay_s=args.label_delay,
            label_loss=args.label_loss, window=args.window,
            recovery_tolerance=args.recovery_tolerance, seed=args.seed, seed_rows=args.seed_rows,
        )
    except ValueError as exc:
        raise CommandError(str(exc), exit_code=2) from None
    home, endpoints = find_mesh()
    try:
        target = Target.from_spec(load_spec(Path(endpoints.spec_path)), model)
    except FileNotFoundError as exc:
        raise CommandError(str(exc)) from None
    except FlywheelError as exc:
        raise CommandError(f"{exc.message} ({endpoints.spec_path})") from None
    columns = Columns(label=args.label_column, entity=args.entity_column, time=args.time_column,
                      drift=args.drift_column)
    try:
        table = read_table(args.data) if args.data else _world_table(args)
        source = str(args.data) if args.data else f"world:{args.world}"
        history = from_table(table, target.dtypes, target.features, target.classification,
                             columns, source=source)
    except (HistoryError, ValueError) as exc:
        raise CommandError(str(exc), exit_code=2) from None
    if args.drift_at is not None:
        history.drift_rows = sorted(set(args.drift_at))
    if config.seed_rows >= len(history):
        raise CommandError(f"--seed-rows {config.seed_rows} leaves nothing of the "
                           f"{len(history)} rows to replay", exit_code=2)
    out_dir = home / "replay"
    run = ReplayRun(config, target, history, endpoints, out_dir, source, ProgressLine())
    try:
        report = asyncio.run(run.run())
    except MeshGone as exc:
        raise CommandError(str(exc)) from None
    except MeshUnavailable as exc:
        raise CommandError(str(exc), detail="is the mesh up? `flywheel status` tells") from None
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        _describe(report)
    return 0


def _world_table(args: argparse.Namespace):
    from flywheel.replay.worlds import world_table

    return world_table(args.world, args.rows, args.drifts, seed=args.seed)


def _write_world(args: argparse.Namespace) -> int:
    from flywheel.replay.worlds import write_table

    if args.world is None:
        raise CommandError("--write makes a history from --world; --data is already one",
                           exit_code=2)
    try:
        path = write_table(_world_table(args), args.write)
    except ValueError as exc:
        raise CommandError(str(exc), exit_code=2) from None
    summary = {"world": args.world, "rows": args.rows, "drifts": args.drifts,
               "seed": args.seed, "path": str(path)}
    print(json.dumps(summary) if args.json else
          f"wrote {args.rows} rows of the {args.world} world ({args.drifts} drifts) to {path}")
    return 0


def _describe(report: dict) -> None:
    metric = report["metric"]
    print(f"{report['rows']} rows replayed against {report['model']} (trainer "
          f"{report['trainer']}, {report['mode']}), {report['scored']} scored, "
          f"{report['lost']} lost {report['lost_reasons'] or ''}")
    print(f"prequential {metric}: flywheel {report[f'prequential_{metric}']}, static starting "
          f"champion v{report['starting_version']} {report[f'static_prequential_{metric}']} "
          f"(gain {report['gain']})")
    for window in report["windows"]:
        print(f"  rows {window['start']:>7}-{window['end']:<7} {metric} {window[metric]}  "
              f"static {window[f'static_{metric}']}  versions {window['versions']}")
    for entry in report["recovery"]:
        recovered = (f"recovered in {entry['rows_to_recover']} rows" if entry["recovered"]
                     else "did not recover")
        static = entry["static_rows_to_recover"]
        print(f"drift at row {entry['drift_at']}: {metric} {entry['before']} before, worst "
              f"{entry['worst']}, {recovered} (static: "
              f"{f'{static} rows' if static is not None else 'did not recover'})")
    print(f"versions promoted {report['versions_promoted']}, refused "
          f"{report['versions_refused']}, rollbacks {len(report['rollbacks'])}")
    print(f"plot: {report['plot']}")
