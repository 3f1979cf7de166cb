"""`cadence bench …`: the argument parsers and handlers the main CLI mounts.

`run` and `compare` live here; `soak`, `fuzz` and `capacity` register beside them through
`add_bench_parser`'s subparsers (each a handler returning an exit code).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from cadence.bench.scenarios import SCENARIOS

DEFAULT_OUT = Path("bench-results")


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def _run(args: argparse.Namespace) -> int:
    from cadence.bench.report import terminal_table
    from cadence.bench.runner import BenchOptions, run_bench, write_outputs

    options = BenchOptions(
        target=args.target,
        scenarios=args.scenario,
        sessions=args.sessions,
        trials=args.trials,
        warmup=args.warmup,
        token=args.token or None,
        seed=args.seed,
        config=args.config,
        profile=args.profile,
    )
    result = await run_bench(options)
    paths = write_outputs(result, args.out, args.name)
    print(terminal_table(result))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


async def _compare(args: argparse.Namespace) -> int:
    from cadence.bench.compare import render
    from cadence.bench.report import load_result

    a, b = load_result(args.a), load_result(args.b)
    print(render(a, b, str(args.a), str(args.b)))
    return 0


def _add_run(commands: Any) -> None:
    run = commands.add_parser(
        "run",
        help="measure latency the way a user feels it, per stage, under concurrency",
        description="Simulated users speak synthesized questions in real time (20 ms frames) "
        "to the target and listen to the replies; reports voice-to-voice and barge-in stop at "
        "the client, the server's per-stage spans, WER and answer accuracy, with p50/p95/max, "
        "budget and target pass/fail; writes JSON, Markdown and PNG files to --out.",
    )
    run.add_argument(
        "--target",
        default="inproc",
        help="inproc (default), ws://HOST:PORT, webrtc://HOST:PORT, or a full Realtime URL "
        "(wss://HOST/v1/realtime?model=NAME)",
    )
    run.add_argument(
        "--scenario",
        default="single",
        help=f"comma-separated: {', '.join(SCENARIOS)}, or all (default single)",
    )
    run.add_argument(
        "--sessions",
        type=int,
        default=1,
        help="concurrent sessions (default 1); with more "
        "than one, each asks a question every 6-10 s at random",
    )
    run.add_argument(
        "--trials", type=int, default=5, help="trials per session and scenario (default 5)"
    )
    run.add_argument(
        "--warmup", type=int, default=1, help="uncounted warm-up turns first (default 1)"
    )
    run.add_argument(
        "--token",
        default=os.environ.get("CADENCE_TOKEN"),
        help="bearer token for the target (default: $CADENCE_TOKEN)",
    )
    run.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"result folder (default {DEFAULT_OUT}/)"
    )
    run.add_argument("--name", help="file name stem for the results (default: time and target)")
    run.add_argument("--seed", type=int, default=0, help="picks voices, questions and timing")
    run.add_argument("--config", type=Path, help="TOML config (inproc target only)")
    run.add_argument("--profile", help="agent profile from the config (inproc target only)")
    run.set_defaults(handler=_run)


def _add_compare(commands: Any) -> None:
    compare = commands.add_parser(
        "compare",
        help="compare two result files stage by stage",
        description="Print p50/p95 of every metric of A and B side by side with the change, "
        "quality figures, and the targets and budgets whose verdict changed.",
    )
    compare.add_argument("a", type=Path, help="the baseline result JSON")
    compare.add_argument("b", type=Path, help="the result JSON to compare with it")
    compare.set_defaults(handler=_compare)


def _register_reliability(commands: Any) -> None:
    from cadence.bench.capacity import add_capacity_parser
    from cadence.bench.fuzz import add_fuzz_parser
    from cadence.bench.soak import add_soak_parser

    add_fuzz_parser(commands)
    add_soak_parser(commands)
    add_capacity_parser(commands)


async def _vision(args: argparse.Namespace) -> int:
    from cadence.video.bench import format_records, vision_latency

    records = await asyncio.to_thread(
        vision_latency,
        frame_counts=tuple(args.frames),
        runs=args.runs,
        device=args.device,
        real_size=args.real_size,
    )
    print(format_records(records))
    return 0


def _add_vision(commands: Any) -> None:
    vision = commands.add_parser(
        "vision",
        help="vision-stage latency: frame to first token, per backend",
        description="Time from a frame to the first token for the scene reader (OCR, the CPU "
        "default) and each transformers VLM family (tiny random weights on CPU; "
        "--real-size builds real-size architectures, for a GPU).",
    )
    vision.add_argument("--frames", type=int, nargs="+", default=[1, 4], help="frames per turn")
    vision.add_argument("--runs", type=int, default=3, help="timed runs per case (median)")
    vision.add_argument("--device", default="cpu", help="torch device for the VLMs")
    vision.add_argument("--real-size", action="store_true", help="real-size random weights")
    vision.set_defaults(handler=_vision)


def add_bench_parser(subparsers: Any) -> argparse.ArgumentParser:
    bench = subparsers.add_parser(
        "bench",
        help="benchmark latency at the client (run, compare, vision, fuzz, soak)",
        description="Latency benchmarks: `run` measures, `compare` diffs two result files, "
        "`vision` times the vision stage; `fuzz` and `soak` test robustness.",
    )
    commands = bench.add_subparsers(dest="bench_command", required=True)
    _add_run(commands)
    _add_compare(commands)
    _register_reliability(commands)
    _add_vision(commands)
    return bench
