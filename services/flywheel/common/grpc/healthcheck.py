"""``python -m flywheel.common.grpc.healthcheck PORT``: the container healthcheck.

Asks grpc.health.v1 ``Check`` on ``HOST:PORT`` and exits 0 only when the answer is SERVING
(1 otherwise: NOT_SERVING, unreachable, timed out), so a container is healthy when the service
says it is ready, not merely when its port accepts connections.

``--live`` is the liveness variant: the server answered the health call at all (SERVING or
NOT_SERVING), so it is alive even while it waits for a dependency, e.g. inference before the
first model is promoted, which a restart would not fix.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pydantic import SecretStr

from flywheel.common.grpc.client import health_status
from flywheel.common.settings import GrpcSecuritySettings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flywheel.common.grpc.healthcheck")
    parser.add_argument("port", type=int, help="gRPC port of the service")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--service", default="", help="service name to check ('' = overall)")
    parser.add_argument("--timeout", type=float, default=2.0, help="deadline of the call (s)")
    parser.add_argument("--live", action="store_true",
                        help="succeed on any answer (liveness), not only on SERVING (readiness)")
    args = parser.parse_args(argv)
    # The transport of the service it checks (TLS, a client certificate under mutual TLS),
    # from the same FLYWHEEL_GRPC_* variables; health itself needs no token.
    security = GrpcSecuritySettings()
    status = health_status(f"{args.host}:{args.port}", args.service, timeout_s=args.timeout,
                           security=security.model_copy(update={"token": SecretStr(""),
                                                                "token_file": None}))
    print(status)
    accepted = {"SERVING", "NOT_SERVING"} if args.live else {"SERVING"}
    return 0 if status in accepted else 1


if __name__ == "__main__":
    sys.exit(main())
