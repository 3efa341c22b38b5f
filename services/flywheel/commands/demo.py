"""``flywheel demo``: the drift scenario against the running mesh."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from flywheel.commands import CommandError


def register(subparsers: argparse._SubParsersAction) -> None:
    from flywheel.commands.context import LOOKUP_HELP

    demo = subparsers.add_parser(
        "demo",
        help="run the drift scenario against the running mesh and report the flywheel at work",
        description="Streams synthetic customers through ingest, asks for predictions, sends "
        "the ground truth back late (some noisy, some never), drifts the hidden concept "
        "midway and reports how the mesh retrained, gated, promoted and recovered. Needs "
        "`flywheel up` first. Writes a plot under $FLYWHEEL_HOME/demo/. " + LOOKUP_HELP,
    )
    demo.add_argument("--duration", type=float, default=150.0, help="seconds of traffic (default 150)")
    demo.add_argument("--drift-at", type=float,
                      help="second at which the concept drifts (default: a third of the duration)")
    demo.add_argument("--rate", type=float, default=200.0, help="customers per second (default 200)")
    demo.add_argument("--seed", type=int, default=7, help="seed of the synthetic world (default 7)")
    demo.add_argument("--drift-angle", type=float, default=80.0,
                      help="degrees the hidden concept turns at the drift (default 80)")
    demo.add_argument("--world", choices=("linear", "nonlinear"), default="linear",
                      help="the hidden concept: a linear rule that turns at the drift, or a "
                      "scorecard of thresholds and interactions whose rules change (default "
                      "linear)")
    demo.add_argument("--json", action="store_true",
                      help="print the report as one JSON object (the last line of stdout)")
    demo.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    import asyncio

    # First: with no mesh, one line at once, before the demo's heavy imports.
    home, endpoints = find_mesh()

    from flywheel.demo.liveness import MeshGone, MeshUnavailable
    from flywheel.demo.progress import ProgressLine
    from flywheel.demo.run import DemoRun
    from flywheel.demo.scenario import ScenarioConfig

    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    try:
        config = ScenarioConfig(
            seed=args.seed, duration_s=args.duration, rate=args.rate,
            drift_at_s=args.drift_at if args.drift_at is not None else args.duration / 3,
            drift_angle_deg=args.drift_angle, world=args.world,
        )
    except ValueError as exc:
        raise CommandError(str(exc), exit_code=2) from None
    run = DemoRun(config, endpoints, out_dir=home / "demo", progress=ProgressLine())
    try:
        report = asyncio.run(run.run())
    except MeshGone as exc:
        raise CommandError(str(exc)) from None
    except MeshUnavailable as exc:
        raise CommandError(str(exc), detail="is the mesh up? `flywheel status` tells") from None
    (home / "demo" / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        _describe(report)
    return 0 if report["ok"] else 1


def find_mesh():
    """(FLYWHEEL_HOME, the endpoints of the running mesh): the one place the demo and the
    replay learn where the mesh is (`flywheel.commands.context`: explicit FLYWHEEL_*
    variables, else the running mesh's state). With no mesh: one line, before heavy imports."""
    from flywheel.commands.context import mesh_context
    from flywheel.mesh.context import ALL_SERVICES

    context = mesh_context("kafka", "registry", *ALL_SERVICES)
    from flywheel.demo.clients import MeshEndpoints

    endpoints = MeshEndpoints(
        grpc=dict(context.grpc), kafka_bootstrap=context.kafka_bootstrap,
        namespace=context.namespace, registry_uri=context.registry_uri,
        spec_path=str(context.spec_path), security=context.grpc_security,
    )
    return context.home, endpoints


def _describe(report: dict) -> None:
    recovered = (f"recovered to {report['accuracy_recovered']} in {report['seconds_to_recover']}s"
                 if report["recovered"] else "did NOT recover")
    print(f"accuracy {report['accuracy_before_drift']} before the drift, dipped to "
          f"{report['accuracy_after_drift']}, {recovered} "
          f"(target {report['target_accuracy']})")
    print(f"versions promoted {report['versions_promoted']}, refused {report['versions_refused']}, "
          f"served {report['versions_served']}")
    print(f"events {report['events']}, predictions {report['predictions']}, "
          f"labels {report['labels']}, lost {report['lost']}, duplicated {report['duplicated_labels']}")
    print(f"plot: {report['plot']}")
    print("OK: the loop closed" if report["ok"] else "NOT OK: see the report above")
