"""Admission control: at most N calls in their handlers at once; the rest get
RESOURCE_EXHAUSTED at once (load shed instead of a growing queue).

This replaces grpc.aio's own ``maximum_concurrent_rpcs``, which decides whether to admit the
*next* call at the moment it accepts the previous one: once the limit was reached, the first
call after the burst is refused even by a server that has been idle since (grpcio 1.81). Here
a call is counted from its arrival to the end of its handler. The wrapper every service
method gets at registration applies it (interceptors.py; health checks and reflection are
never counted nor refused, so probes keep answering).
"""

from __future__ import annotations


class Admission:
    def __init__(self, limit: int) -> None:
        if limit <= 0:
            raise ValueError("max_concurrent_rpcs must be positive")
        self.limit = limit
        # Every handler runs on the server's one event loop: the counts need no lock.
        self.active = 0
        self.refused = 0

    def try_enter(self) -> bool:
        if self.active >= self.limit:
            self.refused += 1
            return False
        self.active += 1
        return True

    def leave(self) -> None:
        self.active -= 1

    @property
    def refusal(self) -> str:
        return f"the server is at its limit of {self.limit} concurrent calls; retry later"
