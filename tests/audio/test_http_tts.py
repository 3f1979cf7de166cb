"""Remote speech synthesis over `/v1/audio/speech` with streamed PCM: against the openai SDK's
own request, and a tiny in-test server that speaks the format (no open TTS server installs
offline from the registry with a voice and streamed PCM; see docs/deployment.md).
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
from collections.abc import Awaitable, Callable

import httpx2
import numpy as np
import pytest
import soundfile as sf

from cadence.audio.http_tts import HttpTTS, HttpTtsOptions
from cadence.errors import BackendUnavailable, ConfigError, ModelError, StageTimeout

RATE = 24_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tts_at(port: int, **options: object) -> HttpTTS:
    settings: dict[str, object] = {
        "url": f"http://127.0.0.1:{port}/v1",
        "connect_retries": 1,
        "retry_backoff_s": 0.05,
        "read_timeout_s": 5.0,
    }
    settings.update(options)
    return HttpTTS(HttpTtsOptions(**settings))


def tone(seconds: float, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


Answer = Callable[[dict[str, object], asyncio.StreamWriter], Awaitable[None]]


class SpeechServer:
    """Speaks `/v1/audio/speech` like the open TTS servers: chunked transfer, raw PCM."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[tuple[bytes, dict[str, object]]] = []
        self.hung_up = asyncio.Event()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> SpeechServer:
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
            body = json.loads(await reader.readexactly(length))
            self.requests.append((head, body))
            watch = asyncio.create_task(self._watch(reader))
            try:
                await self.answer(body, writer)
            finally:
                watch.cancel()
        except (ConnectionError, asyncio.IncompleteReadError):
            self.hung_up.set()
        finally:
            writer.close()
            self._writers.discard(writer)

    async def _watch(self, reader: asyncio.StreamReader) -> None:
        if await reader.read(1) == b"":
            self.hung_up.set()


def chunked_head(content_type: str = "audio/pcm") -> bytes:
    return (
        f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    ).encode()


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


async def send_in_pieces(writer: asyncio.StreamWriter, data: bytes, size: int = 1001) -> None:
    # An odd size: samples straddle network reads, as they do on real connections.
    for i in range(0, len(data), size):
        writer.write(chunk(data[i : i + size]))
        await writer.drain()
    writer.write(b"0\r\n\r\n")
    await writer.drain()


async def test_pcm_streams_back_chunk_by_chunk_before_the_engine_finishes() -> None:
    first, rest = tone(0.2), tone(0.5)[4800:]
    go_on = asyncio.Event()

    async def speak(body: dict[str, object], writer: asyncio.StreamWriter) -> None:
        assert body["response_format"] == "pcm"
        writer.write(chunked_head())
        writer.write(chunk(pcm16(first)))
        await writer.drain()
        await asyncio.wait_for(go_on.wait(), 5)  # the rest only once the client has audio
        await send_in_pieces(writer, pcm16(rest))

    async with SpeechServer(speak) as server:
        tts = tts_at(server.port, voice="af_heart", model="kokoro", speed=1.1)
        assert tts.sample_rate == RATE
        loop = asyncio.get_running_loop()

        def consume() -> list[np.ndarray]:
            pieces = []
            for piece in tts.stream("Paris is the capital of France."):
                pieces.append(piece)
                loop.call_soon_threadsafe(go_on.set)
            return pieces

        pieces = await asyncio.wait_for(asyncio.to_thread(consume), 10)
    assert len(pieces) > 2
    assert all(p.dtype == np.float32 and p.ndim == 1 for p in pieces)
    audio = np.concatenate(pieces)
    expected = np.concatenate([first, rest])
    assert len(audio) == len(expected)
    assert np.max(np.abs(audio - expected)) < 1e-3
    _, body = server.requests[0]
    assert body == {
        "model": "kokoro",
        "input": "Paris is the capital of France.",
        "voice": "af_heart",
        "response_format": "pcm",
        "speed": 1.1,
    }


async def test_request_matches_the_openai_sdks() -> None:
    openai = pytest.importorskip("openai")

    async def speak(body: dict[str, object], writer: asyncio.StreamWriter) -> None:
        writer.write(chunked_head())
        await send_in_pieces(writer, pcm16(tone(0.05)))

    async with SpeechServer(speak) as server:
        tts = tts_at(server.port, model="tts-1", voice="alloy", instructions="Speak warmly.")
        await asyncio.to_thread(tts.synthesize, "Hello there.")
    head, ours = server.requests[0]
    assert head.startswith(b"POST /v1/audio/speech HTTP/1.1")

    captured: list[httpx2.Request] = []

    def capture(request: httpx2.Request) -> httpx2.Response:
        captured.append(request)
        return httpx2.Response(200, content=b"\0\0", headers={"content-type": "audio/pcm"})

    client = openai.OpenAI(
        base_url="http://engine/v1",
        api_key="k",
        http_client=httpx2.Client(transport=httpx2.MockTransport(capture)),
    )
    with client.audio.speech.with_streaming_response.create(
        model="tts-1",
        voice="alloy",
        input="Hello there.",
        response_format="pcm",
        speed=1.0,
        instructions="Speak warmly.",
    ) as response:
        response.read()
    assert captured[0].url.path == "/v1/audio/speech"
    assert json.loads(captured[0].read()) == ours


async def test_a_wav_answer_is_read_from_its_header_and_resampled() -> None:
    source = tone(0.5, 22_050)  # a Piper voice's native rate, sent as a WAV

    async def speak(body: dict[str, object], writer: asyncio.StreamWriter) -> None:
        buf = io.BytesIO()
        sf.write(buf, source, 22_050, format="WAV", subtype="PCM_16")
        writer.write(chunked_head("audio/wav"))
        await send_in_pieces(writer, buf.getvalue(), size=17)  # the header arrives in bits

    async with SpeechServer(speak) as server:
        audio = await asyncio.to_thread(tts_at(server.port).synthesize, "Hello.")
    assert abs(len(audio) - RATE // 2) < 50
    assert 0.25 < float(np.max(np.abs(audio))) < 0.35


async def test_closing_the_iterator_hangs_up() -> None:
    async def endless(body: dict[str, object], writer: asyncio.StreamWriter) -> None:
        writer.write(chunked_head())
        for _ in range(200):  # bounded: 10 s of 50 ms
            writer.write(chunk(pcm16(tone(0.05))))
            await writer.drain()
            await asyncio.sleep(0.05)

    async with SpeechServer(endless) as server:
        tts = tts_at(server.port)

        def first_only() -> np.ndarray:
            stream = tts.stream("A very long paragraph.")
            piece = next(stream)
            stream.close()
            return piece

        assert (await asyncio.to_thread(first_only)).size > 0
        await asyncio.wait_for(server.hung_up.wait(), 2)


def test_engine_down_is_backend_unavailable() -> None:
    port = free_port()
    with pytest.raises(BackendUnavailable, match=f"127.0.0.1:{port}/v1/audio/speech"):
        tts_at(port).warm()


async def test_a_stalled_engine_is_a_stage_timeout() -> None:
    async def stall(body: dict[str, object], writer: asyncio.StreamWriter) -> None:
        writer.write(chunked_head() + chunk(pcm16(tone(0.05))))
        await writer.drain()
        await asyncio.sleep(5)

    async with SpeechServer(stall) as server:
        got: list[np.ndarray] = []

        def consume() -> None:
            for piece in tts_at(server.port, read_timeout_s=0.3).stream("Hello."):
                got.append(piece)

        with pytest.raises(StageTimeout, match=r"sent nothing for 0\.3 s"):
            await asyncio.to_thread(consume)
    assert sum(len(p) for p in got) == int(RATE * 0.05)


async def test_a_server_error_and_non_audio_are_clear() -> None:
    async def fail(body: dict[str, object], writer: asyncio.StreamWriter) -> None:
        payload = b'{"error": {"message": "voice not found: bob"}}'
        writer.write(
            b"HTTP/1.1 500 X\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        await writer.drain()

    async with SpeechServer(fail) as server:
        with pytest.raises(BackendUnavailable, match="voice not found: bob"):
            await asyncio.to_thread(tts_at(server.port).synthesize, "Hi.")

    async def mp3ish(body: dict[str, object], writer: asyncio.StreamWriter) -> None:
        writer.write(chunked_head("audio/wav"))
        await send_in_pieces(writer, b"RIFF\x00\x00\x00\x00MP3!" + b"\x00" * 64)

    async with SpeechServer(mp3ish) as server:
        with pytest.raises(ModelError, match="neither raw PCM nor a WAV"):
            await asyncio.to_thread(tts_at(server.port).synthesize, "Hi.")


def test_empty_text_asks_nothing_and_options_are_checked() -> None:
    assert tts_at(free_port()).synthesize("  ").size == 0
    with pytest.raises(ConfigError, match="sample_rate"):
        HttpTtsOptions(url="http://h/v1", sample_rate=1000)
