"""Event-loop lag: how late the server's loop wakes up, the first sign of blocking work.

A task sleeps a fixed interval and records how much later than asked it woke; the recent
p50/p99/max go to `/metrics` as `cadence_event_loop_lag_ms{quantile=...}`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

import numpy as np

from cadence.transport.metrics import Metrics

INTERVAL_S = 0.05
WINDOW = 1200  # samples kept: one minute at 20 per second


class LoopLagMonitor:
    def __init__(self, metrics: Metrics, *, interval_s: float = INTERVAL_S) -> None:
        self.metrics = metrics
        self.interval_s = interval_s
        self.lags_ms: deque[float] = deque(maxlen=WINDOW)
        metrics.help["cadence_event_loop_lag_ms"] = (
            "event-loop wake-up lag over the last minute (ms), by quantile"
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

    async def run(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(self.interval_s)
            self.record((time.perf_counter() - start - self.interval_s) * 1000.0)
