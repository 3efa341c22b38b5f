"""The four actors of a demo or a replay, run together: the producer (events in), the
application (Predict once the store has a row), the feedback (labels after their delay) and
the progress line. Each stage finishes after the one that feeds it, and is told so through a
flag, so nothing in flight is cut short; a failure or a cancellation stops them all."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol


class Stages(Protocol):
    # True while the producer may still send rows / the application may still predict.
    producing: bool
    predicting: bool


async def run_stages(stages: Stages, producer: Callable[[], Awaitable[None]],
                     application: Callable[[], Awaitable[None]],
                     feedback: Callable[[], Awaitable[None]],
                     progress: Callable[[], Awaitable[None]],
                     on_exit: Callable[[], None]) -> None:
    stages.producing = stages.predicting = True
    actors = [asyncio.create_task(producer(), name="producer"),
              asyncio.create_task(application(), name="application"),
              asyncio.create_task(feedback(), name="feedback"),
              asyncio.create_task(progress(), name="progress")]
    try:
        await actors[0]
        stages.producing = False
        await actors[1]
        stages.predicting = False
        await actors[2]
    finally:
        for task in actors:
            task.cancel()
        await asyncio.gather(*actors, return_exceptions=True)
        on_exit()
