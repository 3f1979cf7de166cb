"""The self-started `cadence serve` that the soak, fuzz and capacity commands measure: a
separate process on 127.0.0.1 with its log kept, so exceptions in it are reported, not
lost; and what /proc and /metrics say about it (RSS, fds, threads, event-loop lag)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

READY = re.compile(r"cadence serving on (http://\S+)")
START_TIMEOUT_S = 600.0  # model loading on a cold, shared machine
LAG_LINE = re.compile(r'^cadence_event_loop_lag_ms\{quantile="([0-9.]+)"\} (\S+)$', re.M)


@dataclass(frozen=True)
class ProcessSample:
    t_s: float
    rss_mb: float
    fds: int
    threads: int
    # RSS counts a file mapped N times N times (llama.cpp maps the GGUF once per instance);
    # PSS counts each page once, and anonymous memory is what the process itself allocated.
    pss_mb: float = 0.0
    anon_mb: float = 0.0


def _kib_fields(path: str) -> dict[str, float]:
    values = {}
    for line in Path(path).read_text().splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB":
            values[key] = float(parts[0])
    return values


def sample_process(pid: int, t_s: float = 0.0) -> ProcessSample:
    """RSS, PSS, anonymous memory, open file descriptors and threads of a process (Linux)."""
    status = Path(f"/proc/{pid}/status").read_text()
    values = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss_kb = float(values["VmRSS"].split()[0])
    threads = int(values["Threads"].strip())
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    try:
        rollup = _kib_fields(f"/proc/{pid}/smaps_rollup")  # Linux 4.14+
    except OSError:
        rollup = {}
    return ProcessSample(
        t_s,
        rss_kb / 1024.0,
        fds,
        threads,
        pss_mb=rollup.get("Pss", 0.0) / 1024.0,
        anon_mb=rollup.get("Anonymous", 0.0) / 1024.0,
    )


def growth(samples: list[ProcessSample], settle_fraction: float = 1 / 6) -> dict[str, float]:
    """Change from the sample after the settling period (minute 5 of 30) to the last one."""
    if len(samples) < 2:
        return {"rss_pct": 0.0, "pss_pct": 0.0, "anon_mb": 0.0, "fds": 0.0, "threads": 0.0}
    end = samples[-1]
    settle_t = samples[0].t_s + settle_fraction * (end.t_s - samples[0].t_s)
    base = next(s for s in samples if s.t_s >= settle_t)

    def pct(now: float, then: float) -> float:
        return 100.0 * (now - then) / then if then else 0.0

    return {
        "rss_pct": pct(end.rss_mb, base.rss_mb),
        "pss_pct": pct(end.pss_mb, base.pss_mb),
        "anon_mb": end.anon_mb - base.anon_mb,
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

    def stalls(self) -> list[list[str]]:
        """The server's event-loop stall warnings (>= 250 ms), each with its logged stack."""
        lines = self.log_path.read_text(errors="replace").splitlines()
        found = []
        for i, line in enumerate(lines):
            if "event loop blocked for" in line:
                stack = lines[i + 1 : i + 31]
                end = next((k for k, ln in enumerate(stack) if not ln.startswith(" ")), len(stack))
                found.append([line, *stack[:end]])
        return found

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


@dataclass(frozen=True)
class LagSample:
    """The server's event-loop lag over the minute before `t_s` (its /metrics quantiles, ms)."""

    t_s: float
    p50: float
    p99: float
    max: float


def parse_loop_lag(metrics_text: str, t_s: float = 0.0) -> LagSample | None:
    """`cadence_event_loop_lag_ms{quantile=...}` from a /metrics page; None if absent."""
    values: dict[str, float] = {}
    for match in LAG_LINE.finditer(metrics_text):
        values[match.group(1)] = float(match.group(2))
    if not {"0.5", "0.99", "1"} <= values.keys():
        return None
    return LagSample(t_s, values["0.5"], values["0.99"], values["1"])
