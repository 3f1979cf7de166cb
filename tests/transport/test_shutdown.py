"""SIGTERM ends a busy `cadence serve` cleanly within a bound (real process, real models).

Two Realtime sessions each start a reply; SIGTERM arrives mid-reply. During the drain
`/readyz` is 503; the replies go on, and one that ends within the grace period is delivered
whole; at the end of the grace period every session gets an `error` saying why and a 1001
close, what is still being generated is cancelled, and the process exits 0 within
`--drain-seconds` + SHUTDOWN_BOUND_S (docs/reliability.md, "Shutdown").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

pytestmark = pytest.mark.models

DRAIN_S = 2.0
SHUTDOWN_BOUND_S = 10.0  # after the grace period: close, wind down, exit
START_TIMEOUT_S = 180.0
READY = re.compile(r"cadence serving on http://127\.0\.0\.1:(\d+)/")
SHORT = "Say yes."
LONG = "Tell me a long story about a lighthouse keeper and the sea."
# A loaded 2-core machine must not trip the degrade policies (as in transport_harness).
CONFIG = "[profiles.default.budgets]\n" + "".join(
    f"{stage} = 5000\n"
    for stage in ("asr_final", "llm_first_token", "first_clause", "tts_first_audio", "v2v")
)


@dataclass
class Served:
    proc: subprocess.Popen[str]
    port: int
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.contextmanager
def cadence_serve(tmp: Path, *args: str) -> Iterator[Served]:
    (tmp / "serve.toml").write_text(CONFIG)
    log = tmp / "serve.err"
    command = [sys.executable, "-m", "cadence.cli", "serve", "--port", "0"]
    proc = subprocess.Popen(
        [*command, "--config", str(tmp / "serve.toml"), *args],
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
        env={k: v for k, v in os.environ.items() if k != "CADENCE_TOKEN"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until ready, or "" when it exits
        match = READY.search(line)
        assert match, log.read_text()[-3000:]
        yield Served(proc, int(match.group(1)), log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _request(text: str) -> list[str]:
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    return [
        json.dumps({"type": "conversation.item.create", "item": item}),
        json.dumps({"type": "response.create"}),
    ]


@dataclass
class Client:
    """A Realtime client that asks `text` (again after every reply, if `keep_asking`)."""

    ws: ClientConnection
    text: str
    keep_asking: bool = False
    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    closed_at: float | None = None

    def first(self, kind: str) -> float | None:
        return next((t for t, e in self.events if e["type"] == kind), None)

    def done(self) -> dict[str, str]:
        """Response id -> status of every response.done."""
        return {
            e["response"]["id"]: e["response"]["status"]
            for _, e in self.events
            if e["type"] == "response.done"
        }

    def created(self) -> list[str]:
        return [e["response"]["id"] for _, e in self.events if e["type"] == "response.created"]

    async def read(self) -> None:
        with contextlib.suppress(Exception):  # a 1001 close ends the iteration
            for message in _request(self.text):
                await self.ws.send(message)
            async for raw in self.ws:
                event = json.loads(raw)
                self.events.append((time.monotonic(), event))
                if event["type"] == "response.done" and self.keep_asking:
                    for message in _request(self.text):
                        await self.ws.send(message)
        self.closed_at = time.monotonic()

    async def wait_for(self, kind: str, within_s: float = 60.0) -> float:
        deadline = time.monotonic() + within_s
        while (t := self.first(kind)) is None:
            assert time.monotonic() < deadline, f"no {kind}: {[e['type'] for _, e in self.events]}"
            await asyncio.sleep(0.02)
        return t


async def _open(
    url: str, text: str, keep_asking: bool = False
) -> tuple[Client, asyncio.Task[None]]:
    ws = await connect(url, max_size=2**24, proxy=None)
    assert json.loads(await ws.recv())["type"] == "session.created"
    client = Client(ws, text, keep_asking)
    return client, asyncio.create_task(client.read())


@pytest.mark.timeout(240)
async def test_sigterm_mid_reply_finishes_or_cancels_sessions_within_a_bound(
    tmp_path: Path,
) -> None:
    with cadence_serve(tmp_path, "--drain-seconds", str(DRAIN_S)) as served:
        url = f"ws://127.0.0.1:{served.port}/v1/realtime"
        # `busy` asks again whenever a reply ends: a reply is under way when the grace ends.
        (short, short_reading), (busy, busy_reading) = await asyncio.gather(
            _open(url, SHORT), _open(url, LONG, keep_asking=True)
        )
        await short.wait_for("response.output_audio.delta")  # both replies under way
        await busy.wait_for("response.created")
        assert not short.done()
        served.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()

        await asyncio.sleep(0.3)
        assert _get(served.base + "/readyz")[0] == 503
        assert json.loads(_get(served.base + "/healthz")[1])["draining"] is True
        async with asyncio.timeout(DRAIN_S + SHUTDOWN_BOUND_S):
            await asyncio.gather(short_reading, busy_reading)
            exit_code = await asyncio.to_thread(served.proc.wait)
        exited = time.monotonic() - signalled
        log = served.log.read_text()

    assert short.closed_at is not None and busy.closed_at is not None
    cut = [r for r in busy.created() if r not in busy.done()]
    print(
        f"\nclosed {short.closed_at - signalled:.2f} s and {busy.closed_at - signalled:.2f} s "
        f"after SIGTERM; exit {exit_code} after {exited:.2f} s; short reply {short.done()}; "
        f"busy session: {len(busy.done())} replies done, {len(cut)} cut"
    )
    for client in (short, busy):
        assert client.ws.close_code == 1001, (client.ws.close_code, client.ws.close_reason)
        assert "drain" in (client.ws.close_reason or "")
        assert client.closed_at is not None
        assert DRAIN_S - 0.2 < client.closed_at - signalled < DRAIN_S + 3.0  # after the grace
        errors = [e for _, e in client.events if e["type"] == "error"]
        assert [e["error"]["code"] for e in errors] == ["server_draining"], errors
        assert "drain" in errors[0]["error"]["message"]
    # Within the grace period replies go on: the short one finished and was delivered whole,
    assert list(short.done().values()) == ["completed"], short.done()
    # the busy session's replies went on being spoken after the signal...
    assert any(t > signalled and e["type"] == "response.output_audio.delta" for t, e in busy.events)
    # ...and the one under way when the grace period ended was cut off: created, never done.
    assert len(cut) == 1 and all(status == "completed" for status in busy.done().values()), (
        busy.done(),
        cut,
    )
    assert exit_code == 0, log[-3000:]
    assert exited < DRAIN_S + SHUTDOWN_BOUND_S
    assert "Traceback" not in log and "ERROR" not in log, log[-3000:]
    assert "drain period over: closed 2 session(s)" in log
