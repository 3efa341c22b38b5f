"""``flywheel up | down | status``: the whole mesh, infrastructure plus the five services."""

from __future__ import annotations

import argparse
import json
import sys

from flywheel.commands import add_json_flag, reported


def register(subparsers: argparse._SubParsersAction) -> None:
    up = subparsers.add_parser(
        "up",
        help="start Kafka, Redis and the five services; wait until they serve",
        description="Starts the local Kafka broker and Redis (or uses FLYWHEEL_KAFKA_BOOTSTRAP / "
        "FLYWHEEL_REDIS_URL), creates the topics, then runs each service as a detached "
        "process (logs in $FLYWHEEL_HOME/logs, state in $FLYWHEEL_HOME/mesh.json) and returns "
        "once all answer SERVING, leaving a supervisor that restarts any service that exits "
        "(with a growing wait, up to 30 s, for one that keeps exiting). On a mesh that partly "
        "runs it starts only what is missing, on the same ports. FLYWHEEL_HOME defaults to "
        "the nearest .flywheel folder holding a state, in the current folder or a parent, "
        "else ./.flywheel.",
    )
    up.add_argument("--free-ports", action="store_true",
                    help="pick free ports instead of the defaults 50051-50055 / 9201-9205")
    up.add_argument("--namespace", help="prefix of topics, groups and keys (FLYWHEEL_NAMESPACE)")
    up.add_argument("--timeout", type=float, default=120.0,
                    help="seconds each start stage may take (default 120)")
    up.add_argument("--secure", action="store_true",
                    help="secure every hop: a local CA in $FLYWHEEL_HOME/tls, mutual TLS and "
                    "bearer tokens with roles on the services, Kafka over SASL_SSL with a "
                    "SCRAM user per service, Redis over TLS with an ACL user per service")
    add_json_flag(up)
    up.set_defaults(handler=_up)

    down = subparsers.add_parser(
        "down", help="stop what `flywheel up` started",
        description="Stops the supervisor first, then the services, then the Kafka and Redis "
        "that `up` started; leaves no process behind.",
    )
    add_json_flag(down)
    down.set_defaults(handler=_down)

    status = subparsers.add_parser(
        "status", help="each service's address, pid, health and restarts",
        description="Exit 0 when every service runs, 3 when the mesh is not up or one is "
        "down (the supervisor restarts it).",
    )
    add_json_flag(status)
    status.set_defaults(handler=_status)


def _mesh_errors():
    from flywheel.mesh import MeshError

    # ValueError: a malformed FLYWHEEL_* variable.
    return reported(MeshError, ValueError)


def _mesh(**settings):
    from flywheel.mesh import Mesh
    from flywheel.mesh.settings import MeshSettings

    return Mesh(MeshSettings.from_env(**settings))


def _progress(line: str) -> None:
    # Progress goes to stderr, so that stdout holds only the result (one JSON line with --json).
    print(line, file=sys.stderr, flush=True)


def _up(args: argparse.Namespace) -> int:
    with _mesh_errors():
        mesh = _mesh(free_ports=args.free_ports, namespace=args.namespace,
                     start_timeout_s=args.timeout, secure=args.secure)
        mesh.up(report=_progress)
        status = mesh.status()
    _print_status(status.to_json(), args.json)
    return 0


def _down(args: argparse.Namespace) -> int:
    with _mesh_errors():
        state = _mesh().down(report=_progress)
    payload = {
        "stopped": sorted(state.services) if state else [],
        "pids": {name: s.pid for name, s in state.services.items()} if state else {},
        "infra_stopped": state.infra_started if state else [],
    }
    if args.json:
        print(json.dumps(payload, sort_keys=True))
    elif state is None:
        print("nothing to stop: no mesh state found (was `flywheel up` run here?)")
    else:
        print("the mesh is down")
    return 0


def _status(args: argparse.Namespace) -> int:
    with _mesh_errors():
        status = _mesh().status()
    _print_status(status.to_json(), args.json)
    if status.state is None:
        return 3
    return 0 if all(s.running for s in status.services) else 3


def _print_status(payload: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(payload, sort_keys=True))
        return
    if not payload["up"]:
        print("the mesh is not up (no state file); run `flywheel up`")
        return
    print(f"namespace {payload['namespace'] or '(none)'}   kafka {payload['kafka_bootstrap']}   "
          f"redis {payload['redis_url']}")
    print(f"registry  {payload['registry_uri']}")
    secured = payload.get("secured")
    if secured:
        print(f"secured   gRPC {secured['grpc']}; Kafka {secured['kafka']}; "
              f"Redis {secured['redis']}")
        print(f"          CA, certificates and secrets in {secured['material']}")
    supervisor = payload.get("supervisor")
    if supervisor is None or not supervisor["running"]:
        print("supervisor not running: nothing restarts a service that exits "
              "(`flywheel up` starts it)")
    else:
        print(f"supervisor pid {supervisor['pid']}   log {supervisor['log']}")
    print(f"{'service':<10} {'address':<22} {'pid':>7}  {'health':<12} {'restarts':>8}  log")
    for service in payload["services"]:
        pid = service["pid"] if service["running"] else "-"
        print(f"{service['name']:<10} {service['address']:<22} {pid:>7}  "
              f"{service['health']:<12} {service['restarts']:>8}  {service['log']}")
