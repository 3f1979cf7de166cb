"""`cadence bench soak`: N spoken sessions for M minutes; the server's RSS, fds and threads.

Also the self-started `cadence serve` that soak and fuzz measure: a separate process on
127.0.0.1 with its log kept, so exceptions in it are reported, not lost.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

READY = re.compile(r"cadence serving on (http://\S+)")
START_TIMEOUT_S = 600.0  # model loading on a cold, shared machine
QUESTIONS = ("What is the capital of France?", "How many days are in a week?", "Say hello.")


@dataclass(frozen=True)
class ProcessSample:
    t_s: float
    rss_mb: float
    fds: int
    threads: int


def sample_process(pid: int, t_s: float = 0.0) -> ProcessSample:
    """RSS, open file descriptors and threads of a process, from /proc (Linux)."""
    status = Path(f"/proc/{pid}/status").read_text()
    values = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss_kb = float(values["VmRSS"].split()[0])
    threads = int(values["Threads"].strip())
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return ProcessSample(t_s, rss_kb / 1024.0, fds, threads)


def growth(samples: list[ProcessSample], settle_fraction: float = 1 / 6) -> dict[str, float]:
    """Change from the sample after the settling period (minute 5 of 30) to the last one."""
    if len(samples) < 2:
        return {"rss_pct": 0.0, "fds": 0.0, "threads": 0.0}
    end = samples[-1]
    settle_t = samples[0].t_s + settle_fraction * (end.t_s - samples[0].t_s)
    base = next(s for s in samples if s.t_s >= settle_t)
    return {
        "rss_pct": 100.0 * (end.rss_mb - base.rss_mb) / base.rss_mb if base.rss_mb else 0.0,
        "fds": float(end.fds - base.fds),
        "threads": float(end.threads - base.threads),
    }


@dataclass
class StartedServer:
    process: asyncio.subprocess.Process
    url: str
    log_path: Path

    @property
    def pid(self) -> int:
        return int(self.process.pid)

    def problems(self) -> list[str]:
        """Exceptions and errors in the server's log (tracebacks are failures even if caught)."""
        text = self.log_path.read_text(errors="replace")
        keys = ("Traceback", "Exception in ASGI", "ERROR")
        return [line for line in text.splitlines() if any(k in line for k in keys)]

    def describe(self) -> str:
        code = self.process.returncode
        return f"pid {self.pid}, " + ("still running" if code is None else f"exit code {code}")


@contextlib.asynccontextmanager
async def started_server(config: str | None = None) -> AsyncIterator[StartedServer]:
    """`cadence serve --port 0` on 127.0.0.1 as a child process, until the block ends."""
    log = Path(tempfile.mkstemp(prefix="cadence-serve-", suffix=".log")[1])
    argv = [sys.executable, "-c", "from cadence.cli import main; raise SystemExit(main())"]
    argv += ["serve", "--host", "127.0.0.1", "--port", "0", "--local-only"]
    if config:
        argv += ["--config", config]
    env = {k: v for k, v in os.environ.items() if k != "CADENCE_TOKEN"}
    with log.open("wb") as log_file:  # noqa: ASYNC230  (opened once, before the child starts)
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=log_file, env=env
        )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(START_TIMEOUT_S):
            while True:
                line = (await process.stdout.readline()).decode()
                if not line:
                    raise RuntimeError(f"cadence serve exited; see {log}")
                if match := READY.search(line):
                    break
        print(f"started cadence serve at {match.group(1)} (log {log})", file=sys.stderr)
        yield StartedServer(process, match.group(1), log)
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                async with asyncio.timeout(30):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()


@dataclass
class SoakReport:
    samples: list[ProcessSample] = field(default_factory=list)
    turns: int = 0
    answered: int = 0
    errors: int = 0
    sessions_lost: int = 0

    def render(self) -> str:
        lines = [
            f"soak: {self.turns} turns, {self.answered} answered, {self.errors} error events, "
            f"{self.sessions_lost} sessions lost"
        ]
        if self.samples:
            first, last = self.samples[0], self.samples[-1]
            g = growth(self.samples)
            lines.append(
                f"server RSS {first.rss_mb:.0f} -> {last.rss_mb:.0f} MiB "
                f"({g['rss_pct']:+.1f}% since the settled sample), fds {first.fds} -> "
                f"{last.fds}, threads {first.threads} -> {last.threads}"
            )
            for s in self.samples[:: max(1, len(self.samples) // 10)]:
                lines.append(
                    f"  t={s.t_s:7.1f} s  rss {s.rss_mb:7.1f} MiB  fds {s.fds}  th {s.threads}"
                )
        return "\n".join(lines)


async def _speaker(
    url: str, token: str | None, until: float, seed: int, report: SoakReport
) -> None:
    """One client: speaks a question in real time, waits for the reply, again until `until`."""
    import websockets

    from cadence.bench.voices import synthesize

    headers = {"Authorization": f"Bearer {token}"} if token else None
    clips = [synthesize(q, "espeak", seed=seed).to(24_000, dtype="int16") for q in QUESTIONS]
    async with websockets.connect(url, additional_headers=headers, max_size=None) as ws:
        await ws.recv()
        n = seed
        while time.monotonic() < until:
            pcm = clips[n % len(clips)].to_pcm16_bytes()
            n += 1
            report.turns += 1
            for i in range(0, len(pcm), 4800):  # 100 ms appends at real time
                chunk = base64.b64encode(pcm[i : i + 4800]).decode()
                await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
                await asyncio.sleep(0.1)
            silence = base64.b64encode(b"\0" * 4800).decode()
            try:
                async with asyncio.timeout(60):
                    while True:
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(0.1):
                                event = json.loads(await ws.recv())
                                if event["type"] == "error":
                                    report.errors += 1
                                if event["type"] == "response.done":
                                    report.answered += 1
                                    break
                                continue
                        await ws.send(
                            json.dumps({"type": "input_audio_buffer.append", "audio": silence})
                        )
            except TimeoutError:
                pass


async def run_soak(
    url: str,
    pid: int | None,
    sessions: int,
    minutes: float,
    token: str | None = None,
    sample_every_s: float = 5.0,
) -> SoakReport:
    """`sessions` speakers for `minutes` against `url`, sampling process `pid` meanwhile."""
    report = SoakReport()
    start = time.monotonic()
    until = start + minutes * 60.0
    ws_url = url.replace("http", "ws", 1).rstrip("/") + "/v1/realtime"

    async def sampler() -> None:
        while pid is not None:
            report.samples.append(sample_process(pid, time.monotonic() - start))
            await asyncio.sleep(sample_every_s)

    sampling = asyncio.create_task(sampler())
    results = await asyncio.gather(
        *(_speaker(ws_url, token, until, seed, report) for seed in range(sessions)),
        return_exceptions=True,
    )
    sampling.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sampling
    if pid is not None:
        report.samples.append(sample_process(pid, time.monotonic() - start))
    report.sessions_lost = sum(isinstance(r, BaseException) for r in results)
    return report


async def soak_command(args: Any) -> int:
    if args.target:
        report = await run_soak(args.target, None, args.sessions, args.minutes, args.token)
        print(report.render())
        return 0 if report.sessions_lost == 0 else 1
    async with started_server(args.config) as server:
        report = await run_soak(server.url, server.pid, args.sessions, args.minutes)
        problems = server.problems()
    print(report.render())
    for line in problems[:20]:
        print(f"  SERVER {line}")
    return 0 if report.sessions_lost == 0 and not problems else 1


def add_soak_parser(commands: Any) -> None:
    soak = commands.add_parser(
        "soak",
        help="N spoken sessions for M minutes; server RSS, fds and threads over time",
    )
    soak.add_argument("--sessions", type=int, default=4)
    soak.add_argument("--minutes", type=float, default=30.0)
    soak.add_argument("--target", help="http://HOST:PORT of a running server (no sampling)")
    soak.add_argument("--token", default=None)
    soak.add_argument("--config", help="TOML config for the started server")
    soak.set_defaults(handler=soak_command)
