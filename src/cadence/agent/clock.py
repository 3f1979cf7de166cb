"""Session clocks: wall time for live sessions, fast-forward time for offline files.

Everything in a session is stamped by one clock in milliseconds; the turn controller only
ever sees these stamps, so swapping the clock changes nothing else.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> float: ...


class MonotonicClock:
    """Wall time since the clock was made (live sessions, benchmarks)."""

    def __init__(self) -> None:
        self._t0 = time.perf_counter()

    def now_ms(self) -> float:
        return (time.perf_counter() - self._t0) * 1000.0


class FastForwardClock:
    """Time for offline runs: it stands still unless moved. The driver jumps it over the
    audio it feeds and lets it `run()` with wall time only while the agent is computing a
    reply, so model work is timed for real while recorded silence costs nothing."""

    def __init__(self) -> None:
        self._base_ms = 0.0
        self._running_since: float | None = None

    def now_ms(self) -> float:
        if self._running_since is None:
            return self._base_ms
        return self._base_ms + (time.perf_counter() - self._running_since) * 1000.0

    def jump_to(self, t_ms: float) -> None:
        self._base_ms = max(self.now_ms(), t_ms)
        if self._running_since is not None:
            self._running_since = time.perf_counter()

    def run(self) -> None:
        if self._running_since is None:
            self._running_since = time.perf_counter()

    def stop(self) -> None:
        self._base_ms = self.now_ms()
        self._running_since = None
