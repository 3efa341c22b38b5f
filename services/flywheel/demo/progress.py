"""One live status line on stderr, drawn by rich.

On a terminal a spinner, the line and the time elapsed are redrawn in place, and notes are
printed above them; elsewhere (a log, CI) nothing is redrawn: a full line is written every
``every_s`` seconds instead, and each note as a line of its own, so the output stays
readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn


class ProgressLine:
    def __init__(self, stream: TextIO | None = None, every_s: float = 5.0) -> None:
        # Markup and highlighting off: the lines carry reasons with brackets of their own.
        self._console = Console(file=stream or sys.stderr, markup=False, highlight=False,
                                soft_wrap=True)
        self._every_s = every_s
        self._last_written = 0.0
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    @property
    def live(self) -> bool:
        return self._console.is_terminal

    def update(self, text: str) -> None:
        if self.live:
            self._live_progress().update(self._task, description=text)
            return
        now = time.monotonic()
        if now - self._last_written >= self._every_s:
            self._last_written = now
            self._console.print(text)

    def note(self, text: str) -> None:
        """A line of its own (a promotion, the drift) above the live line."""
        self._console.print(text)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()  # the last line stays on the screen
            self._progress = None

    def _live_progress(self) -> Progress:
        if self._progress is None:
            self._progress = Progress(SpinnerColumn(), TextColumn("{task.description}", markup=False),
                                      TimeElapsedColumn(), console=self._console,
                                      refresh_per_second=4)
            self._task = self._progress.add_task("", total=None)
            self._progress.start()
        return self._progress
