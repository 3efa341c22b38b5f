"""The one entry point every `python -m flywheel.<service>` goes through.

Settings are read once here and passed down; the app (the service's composition root) is
built inside the running event loop, since grpc.aio binds its objects to the loop they were
made in; SIGTERM drains it gracefully.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from pydantic import ValidationError

from flywheel.common import tracing
from flywheel.common.grpc.server import run_until_signalled
from flywheel.common.kafka import security as kafka_security
from flywheel.common.logging import configure_logging
from flywheel.common.settings import CommonSettings, ServiceSettings

S = TypeVar("S", bound=ServiceSettings)


class App(Protocol):
    async def start(self) -> Any: ...

    async def stop(self) -> Any: ...


def run_service(
    name: str, settings_type: type[S], build: Callable[[CommonSettings, S], App]
) -> None:
    try:
        common = CommonSettings()
        settings = settings_type()
    except ValidationError as error:
        # A one-line reason per bad variable, not a traceback.
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
        )
        sys.exit(f"{name}: invalid settings: {problems}")
    configure_logging(name, common.log_level, common.log_json)
    kafka_security.use(common.kafka_client_security())
    tracing.configure(name, otlp_endpoint=common.otlp_endpoint, trace_dir=common.trace_dir,
                      memory_spans=common.trace_memory_spans,
                      max_links_per_span=common.trace_max_links)

    async def serve() -> None:
        try:
            app = build(common, settings)
        except (ValueError, FileNotFoundError) as error:
            # A spec that does not load (a bad trainer, parameter or metric): its message
            # names the key; a traceback would only hide it.
            raise SystemExit(f"{name}: cannot start: {error}") from None
        await run_until_signalled(app.start, app.stop)

    asyncio.run(serve())
