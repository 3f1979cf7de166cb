"""`cadence bench capacity`: how many concurrent sessions one server holds.

Ramps concurrent `single`-scenario sessions (1, 2, 4, …) over the Realtime WebSocket,
reports voice-to-voice at the client per step and the knee: the last step within a budget.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cadence.bench.engine import llama_cpp_engine
from cadence.bench.runner import BenchOptions, run_bench
from cadence.bench.stats import Dist
from cadence.errors import ConfigError

KNEE_BUDGETS_MS = (600.0, 1000.0)


@dataclass(frozen=True)
class Step:
    sessions: int
    turns: int
    answered: float
    v2v: Dist
    held: int = 0  # turns whose first audio was a holding phrase (the answer was late)


def ramp(max_sessions: int) -> list[int]:
    """1, 2, 4, … up to `max_sessions` (which is always the last step)."""
    steps, n = [], 1
    while n < max_sessions:
        steps.append(n)
        n *= 2
    return [*steps, max_sessions]


def knee(steps: Sequence[Step], budget_ms: float) -> int | None:
    """The most sessions whose v2v p95 stayed within `budget_ms`, counting only steps up to
    the first one that broke it (a lucky later step does not move the knee)."""
    best = None
    for step in steps:
        if step.v2v.p95 is None or step.v2v.p95 > budget_ms or step.answered < 1.0:
            break
        best = step.sessions
    return best


@contextlib.asynccontextmanager
async def _server(target: str | None, config: str | None) -> AsyncIterator[str]:
    if target:
        yield target
        return
    from cadence.bench.server_process import started_server

    async with started_server(config) as server:
        yield server.url.replace("http://", "ws://").rstrip("/")


def format_steps(steps: Sequence[Step]) -> str:
    lines = [
        f"{'sessions':>8} {'turns':>6} {'answered':>9} {'v2v p50':>8} {'v2v p95':>8} {'held':>5}"
    ]
    for s in steps:
        lines.append(
            f"{s.sessions:>8} {s.turns:>6} {s.answered:>9.0%} {s.v2v.p50 or 0:>8.0f} "
            f"{s.v2v.p95 or 0:>8.0f} {s.held:>5}"
        )
    for budget in KNEE_BUDGETS_MS:
        lines.append(
            f"knee at v2v p95 ≤ {budget:.0f} ms: {knee(steps, budget) or 'none'} session(s)"
        )
    return "\n".join(lines)


async def capacity_command(args: argparse.Namespace) -> int:
    if args.engine and (args.target or args.config):
        raise ConfigError("--engine starts its own server and engine: drop --target/--config")
    async with contextlib.AsyncExitStack() as stack:
        config = args.config
        if args.engine:
            config = await stack.enter_async_context(llama_cpp_engine(args.engine_threads))
        target = await stack.enter_async_context(
            _server(args.target, str(config) if config else None)
        )
        print(format_steps(await _ramp(target, args)))
    return 0


async def _ramp(target: str, args: argparse.Namespace) -> list[Step]:
    steps: list[Step] = []
    for n in ramp(args.max_sessions):
        options = BenchOptions(
            target=target,
            scenarios="single",
            sessions=n,
            trials=args.trials,
            warmup=1 if not steps else 0,
            token=args.token,
            seed=len(steps),
        )
        result = await run_bench(options)
        turns = result.turns
        answered = sum(t.answered for t in turns) / len(turns) if turns else 0.0
        v2v = Dist.of(t.v2v_ms for t in turns)
        steps.append(Step(n, len(turns), answered, v2v, sum(t.held for t in turns)))
        print(format_steps(steps).splitlines()[-3], flush=True)
        if steps[-1].v2v.p95 is None or steps[-1].v2v.p95 > max(KNEE_BUDGETS_MS):
            break  # past every budget: more sessions only take longer
    return steps


def add_capacity_parser(commands: Any) -> None:
    capacity = commands.add_parser(
        "capacity",
        help="ramp concurrent sessions until voice-to-voice breaks its budget",
        description="Ramp concurrent `single` sessions (1, 2, 4, …, --max-sessions) over the "
        "Realtime WebSocket against --target, or a `cadence serve` it starts on 127.0.0.1; "
        "print v2v p50/p95 at the client per step and the knee (the most sessions whose p95 "
        "stays within 600 ms and within 1 s). `held` counts turns whose first audio was the "
        "server's holding phrase (the answer was over 1.5 s late), so v2v is the phrase's.",
    )
    capacity.add_argument("--target", help="ws://HOST:PORT of a running server")
    capacity.add_argument("--max-sessions", type=int, default=8)
    capacity.add_argument("--trials", type=int, default=3, help="questions per session per step")
    capacity.add_argument("--token")
    capacity.add_argument("--config", type=Path, help="TOML config for the started server")
    capacity.add_argument(
        "--engine",
        choices=["llama-cpp"],
        help="shared-engine layout: start llama-cpp-python's server on the embedded LLM and "
        "point the started server's LLM stage at it over HTTP (needs the dev extra)",
    )
    capacity.add_argument(
        "--engine-threads", type=int, default=1, help="threads of the --engine server"
    )
    capacity.set_defaults(handler=capacity_command)
