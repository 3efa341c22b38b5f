"""The Kafka security of this process: TLS and SASL properties every Kafka client it makes
carries (`Producer`, the consumer workers, topic creation, the CLI's readers).

Every client of one process reaches one cluster with one identity, so the properties are
set once, by the process's composition root (`flywheel.common.service.run_service` for a
service, `flywheel.commands.context.mesh_context` for a command) from its settings
(`CommonSettings.kafka_client_security`), instead of through every constructor. Empty (the
default): plain text, as in the quick start.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_properties: dict[str, str] = {}


def use(properties: Mapping[str, str]) -> None:
    """Sets the properties every Kafka client made from now on carries."""
    _properties.clear()
    _properties.update(properties)


def secured(config: Mapping[str, Any]) -> dict[str, Any]:
    """`config` with this process's security properties (they win: a client never reaches
    the cluster otherwise)."""
    return {**config, **_properties}
