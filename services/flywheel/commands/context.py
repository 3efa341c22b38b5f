"""``mesh_context``: how every command finds the mesh it talks to.

    from flywheel.commands.context import mesh_context

    context = mesh_context("registry", "kafka")      # what this command needs
    settings = context.common_settings()             # CommonSettings with those addresses
    context.address("training")                      # host:port of a service's gRPC server

The lookup order (explicit FLYWHEEL_* variables, then ``$FLYWHEEL_HOME/mesh.json``, then the
local infrastructure's state) is ``flywheel.mesh.context``'s. A need that cannot be met ends
the command with one line naming what to run (exit 3, as ``flywheel status`` on a mesh that
is not up), before any client is made: Kafka and Redis are probed first, so a broker that
does not answer costs one line, not a screen of client retries.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from flywheel.commands import CommandError

if TYPE_CHECKING:  # the mesh package pulls in grpc: only when a command runs
    from flywheel.mesh.context import MeshContext

NOT_UP_EXIT = 3
PROBE_TIMEOUT_S = 2.0

LOOKUP_HELP = (
    "Where commands find the mesh: each address from its FLYWHEEL_* variable when set "
    "(FLYWHEEL_KAFKA_BOOTSTRAP, FLYWHEEL_REDIS_URL, FLYWHEEL_REGISTRY_URI, FLYWHEEL_NAMESPACE, "
    "FLYWHEEL_SPEC_PATH, FLYWHEEL_<SERVICE>_GRPC_HOST/_PORT), else from the running mesh's "
    "state in $FLYWHEEL_HOME/mesh.json, else (Kafka, Redis) from `flywheel infra up`'s state. "
    "FLYWHEEL_HOME defaults to the nearest .flywheel folder holding a state, in the current "
    "folder or a parent, else ./.flywheel."
)


def mesh_context(*needs: str, environ: dict[str, str] | None = None,
                 cwd: Path | None = None) -> MeshContext:
    """The resolved settings of the mesh; ``needs`` (``kafka``, ``redis``, ``registry``, or
    service names) must be known, and Kafka and Redis must answer, else ``CommandError``."""
    from flywheel.mesh.context import MeshNotUp, resolve

    try:
        context = resolve(environ, cwd).require(needs)
    except MeshNotUp as exc:
        raise CommandError(str(exc), exit_code=NOT_UP_EXIT) from None
    except ValueError as exc:  # a corrupt state file, or a need this module does not know
        raise CommandError(str(exc)) from None
    # Every Kafka client this command makes (the probe first) reaches the cluster as the
    # settings say: plain text, or a secured mesh's operator user.
    from flywheel.common.kafka import security as kafka_security

    kafka_security.use(context.common_settings().kafka_client_security())
    if "kafka" in needs:
        _probe(context, "Kafka", context.kafka_bootstrap, "kafka_bootstrap")
    if "redis" in needs:
        _probe(context, "Redis", context.redis_url, "redis_url")
    return context


def _probe(context: MeshContext, what: str, address: str | None, key: str) -> None:
    from flywheel.infra import kafka_broker, redis_server

    probe = kafka_broker.probe if what == "Kafka" else redis_server.probe
    if address is not None and probe(address, PROBE_TIMEOUT_S):
        return
    origin = context.origins.get(key, "default")
    raise CommandError(
        f"{what} at {address} (from {origin}) does not answer; `flywheel status` shows the "
        f"mesh, `flywheel up` starts what is missing",
        exit_code=NOT_UP_EXIT,
    )
