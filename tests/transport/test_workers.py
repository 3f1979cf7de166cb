"""Many workers over one shared llama.cpp server: kill one mid-reply, the rest carry on.

Real processes only: `python -m llama_cpp.server` (SmolLM2) and `cadence serve --workers 2`
with the LLM stage on it; the clients are plain Realtime WebSocket connections that note which
worker (`x-cadence-worker`) each session landed on. Also the SIGTERM drain of one worker.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from cadence.bench.engine import engine_command

pytestmark = pytest.mark.models

QUESTION = "What is the capital of France?"
CHUNK_MS = 100
SESSIONS = 6
TURN_TIMEOUT_S = 40.0
DEAD_WITHIN_S = 5.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes] | subprocess.Popen[str], timeout_s: float = 15) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture(scope="module")
def llama_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    pytest.importorskip("llama_cpp.server", reason="needs llama-cpp-python[server]")
    from cadence.llm.llamacpp import default_model_path

    port = free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    command = engine_command(port, threads=1, model_path=default_model_path())
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while _probe(f"http://127.0.0.1:{port}/v1/models") != 200:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"llama.cpp server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield port
    finally:
        _stop(proc)


def _probe(url: str) -> int:
    try:
        return _get(url)[0]
    except OSError:
        return 0


@dataclass
class Served:
    proc: subprocess.Popen[str]
    port: int

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/realtime"


@contextlib.contextmanager
def cadence_serve(llama: int, tmp: Path, *args: str) -> Iterator[Served]:
    config = tmp / "shared-engine.toml"
    config.write_text(
        'default_profile = "shared"\n[profiles.shared]\n'
        'instructions = "You are a helpful voice assistant. Keep answers short."\n'
        "[profiles.shared.llm]\n"
        f'backend = "openai"\nurl = "http://127.0.0.1:{llama}/v1"\nmodel = "smollm2"\n'
        "context_window = 2048\nmax_tokens = 40\nread_timeout_s = 60.0\n"
    )
    port = free_port()
    command = [sys.executable, "-m", "cadence.cli", "serve", "--port", str(port)]
    proc = subprocess.Popen(
        [*command, "--config", str(config), *args],
        stdout=subprocess.PIPE,
        stderr=(tmp / "serve.err").open("w"),
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until ready, or "" when it exits
        assert "cadence serving on" in line, (tmp / "serve.err").read_text()[-3000:]
        yield Served(proc, port)
    finally:
        _stop(proc, 40)


@dataclass
class Call:
    ws: ClientConnection
    worker: int
    events: list[str] = field(default_factory=list)
    transcript: str = ""
    done: bool = False
    error: str = ""
    closed_at: float | None = None
    first_audio: asyncio.Event = field(default_factory=asyncio.Event)


def _question_chunks() -> list[str]:
    from cadence.bench.voices import synthesize

    audio = synthesize(QUESTION, tail_silence_s=1.5).to(24_000, dtype="int16").to_pcm16_bytes()
    step = 24_000 * 2 * CHUNK_MS // 1000
    return [base64.b64encode(audio[i : i + step]).decode() for i in range(0, len(audio), step)]


async def _open(url: str) -> Call:
    ws = await connect(url, max_size=2**24, open_timeout=20, compression=None, proxy=None)
    assert ws.response is not None
    first = json.loads(await ws.recv())
    assert first["type"] == "session.created", first
    return Call(ws, int(ws.response.headers["x-cadence-worker"]))


async def _talk(call: Call, chunks: list[str]) -> None:
    """Speak in real time, then keep silent while listening, until the reply or the end."""

    async def speak() -> None:
        with contextlib.suppress(ConnectionClosed):
            for chunk in chunks:
                await call.ws.send(
                    json.dumps({"type": "input_audio_buffer.append", "audio": chunk})
                )
                await asyncio.sleep(CHUNK_MS / 1000)

    speaking = asyncio.create_task(speak())
    try:
        async with asyncio.timeout(TURN_TIMEOUT_S):
            async for raw in call.ws:
                event = json.loads(raw)
                kind = event["type"]
                call.events.append(kind)
                if kind == "response.output_audio.delta":
                    call.first_audio.set()
                elif kind == "response.output_audio_transcript.delta":
                    call.transcript += event.get("delta", "")
                elif kind == "error":
                    call.error = event["error"]["message"]
                elif kind == "response.done":
                    call.events.append(f"status={event['response']['status']}")
                    # A reply the endpointer started on a pause is cancelled when the user
                    # goes on; the answer is the one that completes with words.
                    if event["response"]["status"] == "completed" and call.transcript.strip():
                        call.done = True
                        return
                    call.transcript = ""
            call.closed_at = time.monotonic()  # a clean close ends the iteration
    except ConnectionClosed:
        call.closed_at = time.monotonic()
    except TimeoutError:
        call.events.append("timed out")
    finally:
        speaking.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await speaking


async def _spread_sessions(url: str, count: int) -> list[Call]:
    """Open `count` sessions with at least one on each of two workers (the kernel picks)."""
    calls: list[Call] = []
    for _ in range(5 * count):
        call = await _open(url)
        workers = {c.worker for c in calls}
        if len(calls) == count - 1 and workers == {call.worker}:
            await call.ws.close()  # the last one must land on the other worker
            continue
        calls.append(call)
        if len(calls) == count:
            return calls
    pytest.fail(f"all sessions landed on one worker: {[c.worker for c in calls]}")


async def test_killing_one_worker_ends_only_its_sessions(llama_port: int, tmp_path: Path) -> None:
    chunks = await asyncio.to_thread(_question_chunks)
    with cadence_serve(llama_port, tmp_path, "--workers", "2") as served:
        calls = await _spread_sessions(served.ws_url, SESSIONS)
        workers = {c.worker for c in calls}
        assert len(workers) == 2 and served.proc.pid not in workers
        # The victim is the worker holding the most sessions (at least 3 of 6): the engine
        # answers one request at a time, so when the first of them hears its reply the
        # others are still waiting. (Killing a worker with one session raced its short
        # reply: it could finish before the kill.)
        victim = max(workers, key=lambda pid: sum(c.worker == pid for c in calls))
        talks = [asyncio.create_task(_talk(c, chunks)) for c in calls]
        firsts = [asyncio.create_task(c.first_audio.wait()) for c in calls if c.worker == victim]
        done, pending = await asyncio.wait(
            firsts, timeout=TURN_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
        )
        for task in pending:
            task.cancel()
        assert done, "no session of the victim heard any reply audio"
        os.kill(victim, signal.SIGKILL)  # while its first reply is being heard
        killed_at = time.monotonic()
        mid_reply = [c for c in calls if c.worker == victim and not c.done]
        assert mid_reply, "every session of the victim had finished before the kill"
        await asyncio.gather(*talks)
        survivor = (workers - {victim}).pop()
        for call in calls:
            if call.worker == victim:
                if call in mid_reply:
                    assert not call.done, "a session of the killed worker finished its reply"
                    assert call.closed_at is not None
                else:  # answered just before the kill: its connection is closed all the same
                    await asyncio.wait_for(call.ws.wait_closed(), DEAD_WITHIN_S)
                    call.closed_at = time.monotonic()
                assert call.closed_at - killed_at < DEAD_WITHIN_S
            else:
                assert call.done, f"a survivor's session did not finish: {call.events[-8:]}"
                assert "paris" in call.transcript.lower(), call.transcript
            await call.ws.close()

        status, body = _get(f"http://127.0.0.1:{served.port}/healthz")
        assert status == 200 and json.loads(body)["worker"] == survivor
        fresh = [await _open(served.ws_url) for _ in range(2)]
        assert [c.worker for c in fresh] == [survivor, survivor]
        await asyncio.gather(*(_talk(c, chunks) for c in fresh))
        for call in fresh:
            assert call.done and "paris" in call.transcript.lower(), call.events[-5:]
            await call.ws.close()

        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(30) == 0
    assert not any(_alive(pid) for pid in workers), "a worker outlived the server"


async def test_sigterm_drains_then_closes_with_a_reason(llama_port: int, tmp_path: Path) -> None:
    with cadence_serve(llama_port, tmp_path, "--drain-seconds", "2") as served:
        base = f"http://127.0.0.1:{served.port}"
        status, body = _get(base + "/healthz")
        health = json.loads(body)
        assert status == 200 and health["worker"] == served.proc.pid and health["ready"]
        live = await _open(served.ws_url)
        assert live.worker == served.proc.pid
        served.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)

        assert _get(base + "/readyz")[0] == 503
        assert json.loads(_get(base + "/healthz")[1])["draining"] is True
        async with connect(served.ws_url, proxy=None) as refused:
            event = json.loads(await refused.recv())
            assert event["type"] == "error" and "draining" in event["error"]["message"]
            with pytest.raises(ConnectionClosed):
                await refused.recv()
            assert refused.close_code == 1013 and "draining" in (refused.close_reason or "")

        started = time.monotonic()
        messages = []
        async with asyncio.timeout(10):  # a 1001 close ends the iteration without raising
            async for raw in live.ws:
                messages.append(json.loads(raw))
        assert 1.0 < time.monotonic() - started < 6.0  # after the grace period, not at once
        assert live.ws.close_code == 1001 and "drain" in (live.ws.close_reason or "")
        assert any(m["type"] == "error" and "drain" in m["error"]["message"] for m in messages)
        assert served.proc.wait(20) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):  # a zombie (exited, not yet reaped) is not alive
        stat = Path(f"/proc/{pid}/stat").read_text()
        return re.search(r"\) Z ", stat) is None
    return True
