"""Per-test namespaces, so one broker and one Redis serve a whole test session.

Every service prefixes its topics and consumer groups with ``<namespace>.`` and its Redis
keys with ``<namespace>:`` when a namespace is set; a test that owns a fresh namespace never
sees another test's records, offsets or keys.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass


@dataclass(frozen=True)
class Names:
    """A namespace (``t`` + 8 hex digits) and the names derived from it."""

    namespace: str

    @classmethod
    def fresh(cls, prefix: str = "t") -> Names:
        """A namespace no other test of this session is using."""
        return cls(f"{prefix}{secrets.token_hex(4)}")

    def topic(self, base: str) -> str:
        """``names.topic("flywheel.events.v1")`` -> ``"t1a2b3c4d.flywheel.events.v1"``."""
        return f"{self.namespace}.{base}"

    def group(self, base: str) -> str:
        """The consumer group ``<namespace>.<base>``."""
        return f"{self.namespace}.{base}"

    def key(self, base: str) -> str:
        """The Redis key ``<namespace>:<base>``."""
        return f"{self.namespace}:{base}"

    def __str__(self) -> str:
        return self.namespace
