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


class FastForwardClock(MonotonicClock):
    """Wall time that can jump ahead: an offline run skips over audio it already has
    (input speech, playback of finished replies) while model work is still timed for real."""

    def __init__(self) -> None:
        super().__init__()
        self._offset = 0.0

    def now_ms(self) -> float:
        return super().now_ms() + self._offset

    def jump_to(self, t_ms: float) -> None:
        now = self.now_ms()
        if t_ms > now:
            self._offset += t_ms - now
