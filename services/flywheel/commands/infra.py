"""``flywheel infra up | down | status | fetch``: the local Kafka broker and Redis server."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from flywheel.commands import add_json_flag, reported


def register(subparsers: argparse._SubParsersAction) -> None:
    group = subparsers.add_parser(
        "infra",
        help="start, stop or inspect the local Kafka broker and Redis server",
        description="A real single-node Kafka broker (KRaft) and redis-server, as detached "
        "processes with data and logs under $FLYWHEEL_HOME/infra (FLYWHEEL_HOME defaults to "
        "the nearest .flywheel folder holding a state, else ./.flywheel). "
        "FLYWHEEL_KAFKA_BOOTSTRAP / FLYWHEEL_REDIS_URL name external ones instead.",
    )
    group.set_defaults(parser=group)
    commands = group.add_subparsers(dest="infra_command", metavar="<subcommand>")

    up = commands.add_parser("up", help="start Kafka and Redis and wait until they answer")
    up.add_argument("--kafka-port", type=int, help="broker port (default: a free one)")
    up.add_argument("--redis-port", type=int, help="Redis port (default: a free one)")
    up.add_argument("--timeout", type=float, help="seconds to wait for readiness (default 120)")
    up.add_argument("--secure", action="store_true",
                    help="Kafka on a SASL_SSL listener with SCRAM users, Redis on TLS with ACL "
                    "users; CA, certificates and secrets in $FLYWHEEL_HOME/tls")
    add_json_flag(up)
    up.set_defaults(handler=_up)

    down = commands.add_parser("down", help="stop what `up` started")
    add_json_flag(down)
    down.set_defaults(handler=_down)

    status = commands.add_parser("status", help="show addresses, pids and whether they answer")
    add_json_flag(status)
    status.set_defaults(handler=_status)

    fetch = commands.add_parser("fetch", help="fetch the Kafka broker jars into the cache")
    add_json_flag(fetch)
    fetch.set_defaults(handler=_fetch)


def _infra_errors():
    from flywheel.infra import InfraError

    return reported(InfraError)


def _local_infra():
    from flywheel.infra import LocalInfra

    return LocalInfra()


def _up(args: argparse.Namespace) -> int:
    with _infra_errors():
        status = _local_infra().up(
            kafka_port=args.kafka_port, redis_port=args.redis_port, timeout=args.timeout,
            secure=args.secure,
        )
    _print(status.to_json(), args.json, _describe)
    return 0


def _down(args: argparse.Namespace) -> int:
    with _infra_errors():
        before = _local_infra().down()
    stopped = {c.name: c.pid for c in (before.kafka, before.redis) if c and c.source == "local"}
    payload = {"root": str(before.root), "stopped": stopped}
    _print(payload, args.json, lambda p: [
        f"stopped {name} (pid {pid})" for name, pid in p["stopped"].items()
    ] or [f"nothing was running under {p['root']}"])
    return 0


def _status(args: argparse.Namespace) -> int:
    with _infra_errors():
        status = _local_infra().status()
    _print(status.to_json(), args.json, _describe)
    return 0 if status.running else 3


def _fetch(args: argparse.Namespace) -> int:
    infra = _local_infra()
    with _infra_errors():
        version = infra.fetch()
    payload = {"kafka_version": version, "jars_dir": str(infra.settings.jars_dir)}
    _print(payload, args.json, lambda p: [f"kafka {p['kafka_version']} jars in {p['jars_dir']}"])
    return 0


def _print(payload: dict, as_json: bool, describe: Callable[[dict], list[str]]) -> None:
    if as_json:
        print(json.dumps(payload, sort_keys=True))
    else:
        print("\n".join(describe(payload)))


def _describe(status: dict) -> list[str]:
    lines = []
    for name in ("kafka", "redis"):
        part = status[name]
        if part is None:
            lines.append(f"{name:<6} not started (root {status['root']})")
            continue
        if part["ready"]:
            state = "ready"
        else:
            state = "running, not answering" if part["running"] else "stopped"
        version = part["version"] or ""
        where = f"pid {part['pid']}" if part["pid"] else part["source"]
        secured = {"kafka": ", SASL_SSL + SCRAM", "redis": ", TLS + ACL users"}[name] \
            if part.get("secure") else ""
        lines.append(f"{name:<6} {version:<8} {part['address']:<28} {state} ({where}{secured})")
        if part["log"]:
            lines.append(f"{'':<16}log: {part['log']}")
    return lines
