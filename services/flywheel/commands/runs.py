"""``flywheel runs list | show``: training runs, past ones included, from the training
service's gRPC API (GetTrainingRun, ListTrainingRuns)."""

from __future__ import annotations

import argparse
import json
from datetime import UTC

from flywheel.commands import CommandError, add_json_flag


def register(subparsers: argparse._SubParsersAction) -> None:
    group = subparsers.add_parser(
        "runs", help="training runs, past ones included",
        description="The training runs the training service knows of, also those of its "
        "earlier lifetimes: what triggered each, how far it got, the gate's decision and the "
        "version it registered. A run cut short by a stop of the service reads interrupted.",
    )
    group.set_defaults(parser=group)
    commands = group.add_subparsers(dest="runs_command", metavar="<subcommand>")

    listing = commands.add_parser("list", help="the most recent runs first")
    listing.add_argument("--model", default="", help="only this model's runs")
    listing.add_argument("--limit", type=int, default=50,
                         help="at most this many runs (default 50; 0: all)")
    _common_flags(listing)
    listing.set_defaults(handler=_list)

    show = commands.add_parser("show", help="one run in full")
    show.add_argument("run_id")
    _common_flags(show)
    show.set_defaults(handler=_show)


def _common_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds to wait for the training service (default 10)")
    add_json_flag(parser, "print one JSON object (the last line of stdout)")


def training_endpoint():
    """(address, gRPC security) of the training service: the address `flywheel up` recorded
    in $FLYWHEEL_HOME, else FLYWHEEL_TRAINING_GRPC_HOST / _GRPC_PORT or the default port."""
    from flywheel.demo.clients import MeshEndpoints
    from flywheel.mesh.settings import home_dir

    try:
        endpoints = MeshEndpoints.discover(home_dir())
    except ValueError as error:  # a malformed FLYWHEEL_* variable
        raise CommandError(str(error)) from None
    return endpoints.grpc["training"], endpoints.security



def _call(method: str, request, timeout_s: float):
    import grpc

    from flywheel.common.grpc.client import sync_channel
    from flywheel.v1 import training_pb2_grpc

    address, security = training_endpoint()
    with sync_channel(address, security=security) as channel:
        stub = training_pb2_grpc.TrainingServiceStub(channel)
        try:
            return getattr(stub, method)(request, timeout=timeout_s)
        except grpc.RpcError as error:
            code = error.code()
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise CommandError(
                    f"the training service at {address} does not answer ({code.name})",
                    detail="is the mesh up? `flywheel status` tells",
                ) from None
            raise CommandError(error.details() or code.name) from None


def _list(args: argparse.Namespace) -> int:
    from flywheel.v1 import training_pb2

    if args.limit < 0:
        raise CommandError("--limit must be 0 (all) or positive", exit_code=2)
    reply = _call("ListTrainingRuns", training_pb2.ListTrainingRunsRequest(
        model_name=args.model, limit=args.limit), args.timeout)
    runs = [run_json(r) for r in reply.runs]
    if args.json:
        print(json.dumps({"runs": runs}, sort_keys=True))
    elif not runs:
        print(f"no training runs{f' of {args.model}' if args.model else ''}")
    else:
        _print_table(runs)
    return 0


def _show(args: argparse.Namespace) -> int:
    from flywheel.v1 import training_pb2

    reply = _call("GetTrainingRun", training_pb2.GetTrainingRunRequest(run_id=args.run_id),
                  args.timeout)
    run = run_json(reply.run)
    if args.json:
        print(json.dumps(run, sort_keys=True))
    else:
        _print_run(run)
    return 0


# -- one run as plain data -------------------------------------------------------------------

def _state(value: int) -> str:
    from flywheel.v1 import training_pb2

    return training_pb2.TrainingRunState.Name(value).removeprefix("TRAINING_RUN_STATE_").lower()


def _time(stamp, present: bool) -> str | None:
    if not present:
        return None
    return stamp.ToDatetime(tzinfo=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def run_json(run) -> dict:
    """A flywheel.v1.TrainingRun as JSON-ready data (times in ISO 8601, UTC)."""
    lineage = run.lineage
    started, finished = run.HasField("started_at"), run.HasField("finished_at")
    return {
        "run_id": run.run_id,
        "model": run.model_name,
        "state": _state(run.state),
        "trigger_reason": run.trigger_reason,
        "mode": run.mode,
        "trainer": run.trainer,
        "started_at": _time(run.started_at, started),
        "finished_at": _time(run.finished_at, finished),
        "seconds": (round((run.finished_at.ToNanoseconds() - run.started_at.ToNanoseconds())
                          / 1e9, 3) if started and finished else None),
        "candidate_version": run.candidate_version,
        "parent_version": lineage.parent_version,
        "promoted": run.promoted,
        "gate": ({"passed": run.gate.passed, "metric": run.gate.metric,
                  "candidate": run.gate.candidate, "champion": run.gate.champion,
                  "holdout": run.gate.holdout_size, "decision": run.gate.decision}
                 if run.HasField("gate") else None),
        "candidates": [{"mode": c.mode, "metric": c.metric, "score": c.score,
                        "passed": c.passed, "decision": c.decision, "version": c.version}
                       for c in run.candidates],
        "training_examples": lineage.training_examples,
        "holdout_examples": lineage.holdout_examples,
        "training_data": [{"topic": r.topic, "partition": r.partition,
                           "start_offset": r.start_offset, "end_offset": r.end_offset}
                          for r in lineage.training_data],
        "stage_seconds": {name: round(s, 4) for name, s in run.stage_seconds.items()},
        "error": run.error,
    }


# -- printing --------------------------------------------------------------------------------

def _short_time(iso: str | None) -> str:
    return iso[:19].replace("T", " ") if iso else "-"


def _print_table(runs: list[dict]) -> None:
    print(f"{'run':<13} {'model':<14} {'state':<12} {'mode':<10} {'version':>7}  "
          f"{'promoted':<8}  {'started (UTC)':<19} {'seconds':>8}  trigger")
    for run in runs:
        version = f"v{run['candidate_version']}" if run["candidate_version"] else "-"
        seconds = f"{run['seconds']:.1f}" if run["seconds"] is not None else "-"
        print(f"{run['run_id']:<13} {run['model']:<14} {run['state']:<12} "
              f"{run['mode'] or '-':<10} {version:>7}  {'yes' if run['promoted'] else 'no':<8}  "
              f"{_short_time(run['started_at']):<19} {seconds:>8}  {run['trigger_reason'][:60]}")


# The order a run goes through its stages; a stage added later sorts after these.
STAGES = ("dataset", "train", "export", "evaluate", "register", "promote")


def _stage_order(name: str) -> tuple[int, str]:
    return (STAGES.index(name) if name in STAGES else len(STAGES), name)


def _print_run(run: dict) -> None:
    rows = [("run", run["run_id"]), ("model", run["model"]), ("state", run["state"]),
            ("trigger", run["trigger_reason"]),
            ("mode", f"{run['mode'] or '-'} (trainer {run['trainer'] or '-'})"),
            ("started", _short_time(run["started_at"])),
            ("finished", _short_time(run["finished_at"])
             + (f" ({run['seconds']:.2f} s)" if run["seconds"] is not None else "")),
            ("examples", f"{run['training_examples']} training, "
                         f"{run['holdout_examples']} holdout")]
    if run["candidate_version"]:
        promoted = ", promoted" if run["promoted"] else ", not promoted"
        rows.append(("version", f"v{run['candidate_version']} (parent "
                                f"v{run['parent_version']}){promoted}"))
    if run["gate"]:
        rows.append(("gate", run["gate"]["decision"]))
    if run["stage_seconds"]:
        stages = sorted(run["stage_seconds"].items(), key=lambda item: _stage_order(item[0]))
        rows.append(("stages", ", ".join(f"{name} {s:.2f} s" for name, s in stages)))
    if run["error"]:
        rows.append(("error", run["error"]))
    for name, value in rows:
        print(f"{name:<10} {value}")
    for candidate in run["candidates"]:
        version = f"v{candidate['version']}" if candidate["version"] else "not registered"
        print(f"{'candidate':<10} {candidate['mode']:<10} {candidate['metric']} "
              f"{candidate['score']:.4f}  {version}  {candidate['decision']}")
