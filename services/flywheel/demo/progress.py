"""One live status line on stderr.

On a terminal the line is rewritten in place; elsewhere (a log, CI) a full line is written
every ``every_s`` seconds instead, so the output stays readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressLine:
    def __init__(self, stream: TextIO | None = None, every_s: float = 5.0) -> None:
        self._stream = stream or sys.stderr
        self._live = self._stream.isatty()
        self._every_s = every_s
        self._last_written = 0.0
        self._width = 0

    def update(self, text: str) -> None:
        if self._live:
            padding = " " * max(0, self._width - len(text))
            self._stream.write(f"\r{text}{padding}")
            self._width = len(text)
            self._stream.flush()
            return
        now = time.monotonic()
        if now - self._last_written >= self._every_s:
            self._last_written = now
            self._stream.write(text + "\n")
            self._stream.flush()

    def note(self, text: str) -> None:
        """A line of its own (a promotion, the drift) above the live line."""
        if self._live and self._width:
            self._stream.write("\r" + " " * self._width + "\r")
            self._width = 0
        self._stream.write(text + "\n")
        self._stream.flush()

    def close(self) -> None:
        if self._live and self._width:
            self._stream.write("\n")
            self._stream.flush()
            self._width = 0
