"""The bench's remote targets against `cadence serve` started as a separate process.

The server is the real CLI (`python -m cadence.cli serve --port 0`) with its own models; the
bench talks to it as any Realtime client would, over the WebSocket and over WebRTC.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from bench_files import check_files

from cadence.bench.progress import Progress
from cadence.bench.report import terminal_table
from cadence.bench.runner import BenchOptions, run_bench, write_outputs

pytestmark = pytest.mark.models
SERVE = [sys.executable, "-m", "cadence.cli", "serve", "--host", "127.0.0.1", "--port", "0"]
READY = re.compile(r"cadence serving on (http://\S+?)/?$")
START_TIMEOUT_S = 180.0


def _has_serve() -> bool:
    from cadence.cli import build_parser

    try:
        build_parser().parse_args(["serve", "--help"])
    except SystemExit as exc:
        return exc.code == 0
    return True


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """The base URL (`127.0.0.1:PORT`) of a `cadence serve` child process."""
    if not _has_serve():
        pytest.skip("`cadence serve` is not in cadence.cli yet")
    env = {**os.environ, "CADENCE_TOKEN": ""}  # open server: loopback only
    proc = subprocess.Popen(
        SERVE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    found: list[str] = []
    got = threading.Event()
    err: list[str] = []

    def read_stdout() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if match := READY.search(line.strip()):
                found.append(match.group(1))
                got.set()

    def read_stderr() -> None:  # drained so the child never blocks on a full pipe
        assert proc.stderr is not None
        for line in proc.stderr:
            err.append(line)
            del err[:-40]

    readers = [threading.Thread(target=f, daemon=True) for f in (read_stdout, read_stderr)]
    for reader in readers:
        reader.start()
    try:
        if not got.wait(START_TIMEOUT_S) or proc.poll() is not None:
            pytest.fail("cadence serve did not become ready:\n" + "".join(err))
        yield found[0].removeprefix("http://")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("scheme", ["ws", "webrtc"])
async def test_remote_target_single(server: str, scheme: str, tmp_path: Path) -> None:
    options = BenchOptions(target=f"{scheme}://{server}", scenarios="single", trials=1, warmup=0)
    result = await run_bench(options, progress=Progress(1))
    paths = write_outputs(result, tmp_path, scheme)
    print("\n" + terminal_table(result))
    [turn] = result.turns
    assert turn.answered and turn.v2v_ms is not None, turn
    assert turn.heard and turn.reply
    assert turn.server.get("v2v") is not None  # response.metadata.latency came through
    check_files(paths, turns=1)
