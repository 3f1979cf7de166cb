"""Event-loop lag: how late the server's loop wakes up, the first sign of blocking work.

A task sleeps a fixed interval and records how much later than asked it woke; the recent
p50/p99/max go to `/metrics` as `cadence_event_loop_lag_ms{quantile=...}`. A lag says that
the loop was blocked, not by what: a watchdog thread notices a loop that has not woken for
`STALL_S` and logs the loop thread's stack while it is still blocked.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback
from collections import deque

import numpy as np

from cadence.transport.metrics import Metrics

log = logging.getLogger(__name__)

INTERVAL_S = 0.05
WINDOW = 1200  # samples kept: one minute at 20 per second
STALL_S = 0.25  # a loop this late is a stall users hear (a gap in paced audio)


class StallWatchdog:
    """Logs where the loop thread is when the loop has not beaten for `stall_s`."""

    def __init__(self, loop_thread: int, *, stall_s: float = STALL_S) -> None:
        self.loop_thread = loop_thread
        self.stall_s = stall_s
        self.last_beat = time.monotonic()
        self.stacks: deque[str] = deque(maxlen=8)  # the latest stalls' stacks, for tests
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="loop-stall-watchdog", daemon=True)

    def beat(self) -> None:
        self.last_beat = time.monotonic()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        reported = False
        while not self._stop.wait(self.stall_s / 5):
            blocked_s = time.monotonic() - self.last_beat
            if blocked_s < self.stall_s:
                reported = False
            elif not reported:
                reported = True
                frame = sys._current_frames().get(self.loop_thread)
                stack = "".join(traceback.format_stack(frame, limit=15)) if frame else "?"
                del frame  # kept, it would keep the stack's locals (a whole session) alive
                self.stacks.append(stack)
                log.warning(
                    "event loop blocked for %.0f ms so far; the loop thread is at:\n%s",
                    blocked_s * 1000.0,
                    stack,
                )


class LoopLagMonitor:
    def __init__(self, metrics: Metrics, *, interval_s: float = INTERVAL_S) -> None:
        self.metrics = metrics
        self.interval_s = interval_s
        self.lags_ms: deque[float] = deque(maxlen=WINDOW)
        self.watchdog: StallWatchdog | None = None
        metrics.help["cadence_event_loop_lag_ms"] = (
            "event-loop wake-up lag over the last minute (ms), by quantile"
        )
        metrics.help["cadence_event_loop_stalls_total"] = (
            f"times the event loop woke {STALL_S * 1000:.0f} ms or more late"
        )

    def record(self, lag_ms: float) -> None:
        self.lags_ms.append(max(0.0, lag_ms))
        data = np.fromiter(self.lags_ms, float)
        for quantile, value in (
            ("0.5", np.percentile(data, 50)),
            ("0.99", np.percentile(data, 99)),
            ("1", data.max()),
        ):
            self.metrics.set("cadence_event_loop_lag_ms", round(float(value), 2), quantile=quantile)
        if lag_ms >= STALL_S * 1000.0:
            self.metrics.inc("cadence_event_loop_stalls_total")

    async def run(self) -> None:
        self.watchdog = StallWatchdog(threading.get_ident())
        self.watchdog.start()
        try:
            while True:
                start = time.perf_counter()
                self.watchdog.beat()
                await asyncio.sleep(self.interval_s)
                self.record((time.perf_counter() - start - self.interval_s) * 1000.0)
        finally:
            self.watchdog.stop()  # joins within one poll (50 ms)
