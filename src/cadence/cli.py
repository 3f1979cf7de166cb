"""The `cadence` command: talk to the agent with a file, serve it, benchmark it.

Every expected failure (bad file, bad config, missing model) prints one line saying what is
wrong and exits non-zero; a traceback means a bug.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from cadence.errors import CadenceError

STAGE_COLUMNS = (
    "endpoint",
    "asr_final",
    "llm_first_token",
    "first_clause",
    "tts_first_audio",
    "v2v",
)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _ms(value: object) -> str:
    return "-" if value is None else f"{float(value):.0f}"  # type: ignore[arg-type]


async def _talk(args: argparse.Namespace) -> int:
    from cadence.agent.filetalk import talk_file
    from cadence.agent.runtime import Runtime
    from cadence.audio.io import read_audio, write_audio
    from cadence.config import load_config

    audio = read_audio(args.input, max_duration_s=args.max_seconds)
    profile = load_config(args.config).profile(args.profile)
    runtime = await Runtime.load(profile, progress=None if args.json else _say)
    result = await talk_file(runtime, audio, profile=profile, realtime=args.realtime)
    for error in result.errors:
        _say(f"cadence: warning: {error}")
    if args.output:
        write_audio(args.output, result.reply_audio())
    if args.json:
        for turn in result.turns:
            print(json.dumps(turn.to_json()), flush=True)
        return 0
    if not result.turns:
        print("No question was heard in the file.")
        return 0
    for i, turn in enumerate(result.turns, 1):
        print(f"turn {i}")
        print(f"  you said : {turn.user or '(nothing recognised)'}")
        print(f"  reply    : {turn.reply or turn.generated}")
        lat = turn.latency
        print(
            "  ms after end of speech: "
            + "  ".join(f"{s}={_ms(lat.get(s))}" for s in STAGE_COLUMNS)
        )
        if lat.get("budget_breaches"):
            print("  over budget: " + "; ".join(lat["budget_breaches"]))
    if args.output:
        print(f"reply audio written to {args.output} (24 kHz mono)")
    if not args.realtime:
        print("(offline run: use --realtime for latencies a caller would feel)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cadence", description="Real-time voice and video agent runtime."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    talk = commands.add_parser(
        "talk",
        help="answer every question spoken in an audio file",
        description="Stream an audio file (WAV/FLAC/OGG, any rate or channels) through the "
        "voice loop, answer each question in turn, print transcript, reply and per-stage "
        "latency (ms after the end of user speech).",
    )
    talk.add_argument("input", type=Path, help="audio file with one or more spoken questions")
    talk.add_argument(
        "-o", "--output", type=Path, help="write the spoken replies here (24 kHz mono WAV)"
    )
    talk.add_argument(
        "--realtime", action="store_true", help="stream at real-time pace so latencies are real"
    )
    talk.add_argument(
        "--json", action="store_true", help="print one JSON object per turn (user, reply, latency)"
    )
    talk.add_argument("--config", type=Path, help="TOML config with agent profiles")
    talk.add_argument("--profile", help="agent profile name from the config")
    talk.add_argument(
        "--max-seconds", type=float, default=300.0, help="refuse longer input (default 300)"
    )
    talk.set_defaults(handler=_talk)

    from cadence.bench.cli import add_bench_parser
    from cadence.transport.cli import add_serve_parser

    add_serve_parser(commands)
    add_bench_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(asyncio.run(args.handler(args)))
    except CadenceError as exc:
        _say(f"cadence: error: {exc.message}")
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
