"""A progress bar on stderr: redrawn in place on a terminal, one line per step otherwise.

No dependency: the bar is a few characters, and CI logs want plain lines, not redraws.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

WIDTH = 28


class Progress:
    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.total = max(1, total)
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._t0 = time.perf_counter()
        self._note = ""

    def advance(self, steps: int = 1, note: str = "") -> None:
        self.done = min(self.total, self.done + steps)
        self._note = note or self._note
        self._draw()

    def say(self, message: str) -> None:
        """A message above the bar (model loading, warm-up…)."""
        if self.tty:
            self.stream.write("\r\033[K" + message + "\n")
            self._draw()
        else:
            self.stream.write(message + "\n")
            self.stream.flush()

    def _draw(self) -> None:
        if not self.done and not self.tty:
            return
        filled = WIDTH * self.done // self.total
        elapsed = time.perf_counter() - self._t0
        line = (
            f"[{'#' * filled}{'.' * (WIDTH - filled)}] {self.done}/{self.total} turns "
            f"{elapsed:4.0f}s  {self._note}"
        )
        if self.tty:
            self.stream.write("\r\033[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
