"""Event-loop lag is measured and exposed on /metrics; blocking the loop shows up in it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import pytest
from transport_fakes import fake_factory
from transport_harness import http, running_server

from cadence.transport.loop_lag import LoopLagMonitor
from cadence.transport.metrics import Metrics


def test_quantiles_follow_the_recorded_lags() -> None:
    metrics = Metrics()
    monitor = LoopLagMonitor(metrics)
    for lag in [1.0] * 98 + [50.0, 80.0]:
        monitor.record(lag)
    series = metrics.gauges["cadence_event_loop_lag_ms"]
    assert series[(("quantile", "0.5"),)] == 1.0
    assert series[(("quantile", "1"),)] == 80.0
    assert series[(("quantile", "0.99"),)] > 40.0


async def test_metrics_expose_loop_lag_and_a_blocked_loop_raises_it() -> None:
    async with running_server(session_factory=fake_factory()) as srv:
        await asyncio.sleep(0.3)
        text = (await http("GET", f"{srv.http}/metrics")).text
        assert 'cadence_event_loop_lag_ms{quantile="0.99"}' in text
        time.sleep(0.2)  # noqa: ASYNC251  (blocks the loop on purpose, as a model call would)
        await asyncio.sleep(0.2)
        text = (await http("GET", f"{srv.http}/metrics")).text
        worst = next(
            float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith('cadence_event_loop_lag_ms{quantile="1"}')
        )
        assert worst >= 150.0


async def test_a_stall_is_counted_and_the_blocking_code_is_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics()
    monitor = LoopLagMonitor(metrics)
    running = asyncio.create_task(monitor.run())
    await asyncio.sleep(0.2)
    with caplog.at_level(logging.WARNING, logger="cadence.transport.loop_lag"):
        _block_like_a_model_call(0.5)
        await asyncio.sleep(0.1)
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running
    assert metrics.counters["cadence_event_loop_stalls_total"][()] == 1
    assert monitor.watchdog is not None and not monitor.watchdog._thread.is_alive()
    assert "_block_like_a_model_call" in caplog.text and "event loop blocked" in caplog.text


def _block_like_a_model_call(seconds: float) -> None:
    time.sleep(seconds)
