"""The controller lease: exactly one active training service per mesh.

Every training service process competes for one Redis key, `<prefix>flywheel:training:lease`:

- acquire: `SET key holder NX PX ttl` (the holder id is host, pid and a random suffix, so a
  restarted process never mistakes an old holder for itself);
- renew: every `ttl / 5`, a script that extends the key only while it still names us;
- release: on a graceful stop, a script that deletes the key only while it names us, so a
  standby takes over at once instead of after the TTL.

Why Redis and not a Kafka group on a control topic: the group coordinator notices a dead
member only after its session timeout and then rebalances, which says "someone else has the
partition now" but gives the old member no clock to stop by; a lease with a TTL gives both
sides the same bound. The holder keeps its own deadline on the monotonic clock, started
*before* each renewal is sent: it counts itself active only while that deadline, less a
margin, lies ahead. A holder paused longer than the TTL (SIGSTOP, a long GC) finds its
deadline passed when it resumes and refuses to register anything (`Lease.check`) before
the process ends; the standby could only acquire the key after that same TTL.

A standby that sees the key free takes it within one poll interval (`ttl / 5`); after a
kill -9 of the active, within the TTL plus one interval.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable

import redis

log = logging.getLogger("flywheel.training.lease")

KEY = "flywheel:training:lease"
# The part of the TTL kept in reserve: the holder stops counting itself active this long
# before the key could expire in Redis.
MARGIN_FRACTION = 0.2

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class LeaseLost(RuntimeError):
    """This process no longer holds the controller lease: it must not write the registry."""


def holder_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Lease:
    """One process's side of the lease (blocking calls: use from worker threads)."""

    def __init__(self, client: redis.Redis, key: str, ttl_s: float, holder: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if ttl_s <= 0:
            raise ValueError("the lease TTL must be positive")
        self._client = client
        self.key = key
        self.ttl_s = ttl_s
        self.holder = holder or holder_id()
        self._clock = clock
        self._valid_until = 0.0  # monotonic; 0: not held
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    @property
    def interval_s(self) -> float:
        """How often the holder renews and a standby asks."""
        return self.ttl_s / 5

    @property
    def held(self) -> bool:
        return self._clock() < self._valid_until

    def check(self) -> None:
        """Raises LeaseLost unless the lease is held with its margin to spare."""
        if not self.held:
            raise LeaseLost(f"the training controller lease ({self.key}) is no longer held by "
                            f"{self.holder}: another training service may be active")

    def try_acquire(self) -> bool:
        """Takes the lease if free (or renews it if ours); True when held afterwards."""
        started = self._clock()
        if self._client.set(self.key, self.holder, nx=True, px=self._ttl_ms()):
            self._held_from(started)
            log.info("took the training controller lease as %s", self.holder)
            return True
        return self.renew()

    def renew(self) -> bool:
        started = self._clock()
        if self._renew(keys=[self.key], args=[self.holder, self._ttl_ms()]):
            self._held_from(started)
            return True
        self._valid_until = 0.0
        return False

    def current_holder(self) -> str:
        value = self._client.get(self.key)
        return value.decode() if isinstance(value, bytes) else (value or "")

    def release(self) -> None:
        self._valid_until = 0.0
        self._release(keys=[self.key], args=[self.holder])

    def _ttl_ms(self) -> int:
        return max(1, int(self.ttl_s * 1000))

    def _held_from(self, sent_at: float) -> None:
        self._valid_until = sent_at + self.ttl_s * (1 - MARGIN_FRACTION)
