"""End to end with the real models: the openai SDK and an aiortc caller talk to `cadence serve`.

One server (and the process's one Runtime) serves every test here; each test also checks
the server goes on serving after it.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
import websockets
from openai import AsyncOpenAI
from PIL import Image
from transport_harness import MODEL_TEST_CONFIG, Running, rtc_call, running_server

from cadence.agent.runtime import Runtime
from cadence.audio.chunk import AudioChunk
from cadence.bench.voices import synthesize

pytestmark = [pytest.mark.models, pytest.mark.asyncio(loop_scope="session")]
QUESTION = "What is the capital of France?"
TURN_TIMEOUT_S = 60.0


def words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]", " ", text.lower()).split())


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def server(runtime: Runtime) -> AsyncIterator[Running]:
    async with running_server(runtime=runtime, config=MODEL_TEST_CONFIG) as srv:
        yield srv


@pytest.fixture(scope="module")
def question() -> AudioChunk:
    return synthesize(QUESTION, "piper")


def pcm24(audio: AudioChunk) -> bytes:
    return audio.to(24_000, dtype="int16").to_pcm16_bytes()


async def collect_until_done(conn: Any) -> dict[str, Any]:
    """Read SDK events until response.done; return what a caller would keep."""
    seen: dict[str, Any] = {"types": [], "user": "", "reply": "", "audio": 0, "done": None}
    async with asyncio.timeout(TURN_TIMEOUT_S):
        async for event in conn:
            seen["types"].append(event.type)
            if event.type == "conversation.item.input_audio_transcription.completed":
                seen["user"] = event.transcript
            elif event.type == "response.output_audio_transcript.delta":
                seen["reply"] += event.delta
            elif event.type == "response.output_audio.delta":
                seen["audio"] += len(base64.b64decode(event.delta))
            elif event.type == "error":
                seen.setdefault("errors", []).append(event.error.message)
            elif event.type == "response.done":
                seen["done"] = event
                return seen
    return seen


async def still_serving(server: Running) -> None:
    async with websockets.connect(server.ws) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"


async def test_sdk_spoken_question_gets_spoken_paris(server: Running, question: AudioChunk) -> None:
    client = AsyncOpenAI(base_url=f"{server.http}/v1", api_key="local")
    async with client.realtime.connect(model="default") as conn:
        await conn.session.update(
            session={
                "type": "realtime",
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": 24000},
                        "turn_detection": {"type": "server_vad"},
                    }
                },
            }
        )
        # Real-time pace in 20 ms appends, as a microphone delivers it, then silence.
        # (Larger bursts can end the turn early: reported to the session's owner.)
        audio = pcm24(AudioChunk.concat([question, AudioChunk.silence(1.5, question.sample_rate)]))
        step, t0 = 960, asyncio.get_running_loop().time()  # 20 ms of 24 kHz pcm16
        for k, i in enumerate(range(0, len(audio), step)):
            await conn.input_audio_buffer.append(
                audio=base64.b64encode(audio[i : i + step]).decode()
            )
            await asyncio.sleep(max(0.0, t0 + (k + 1) * 0.02 - asyncio.get_running_loop().time()))
        seen = await collect_until_done(conn)
    assert "input_audio_buffer.speech_started" in seen["types"]
    assert "capital of france" in words(seen["user"])
    assert "paris" in words(seen["reply"]), seen["reply"]
    assert seen["audio"] > 24_000 * 2 * 0.5  # more than half a second of reply audio
    latency = json.loads(seen["done"].response.metadata["latency"])
    assert latency["v2v"] is not None and latency["v2v"] > 0
    await still_serving(server)


def red_square_png() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (220, 20, 20)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


async def test_sdk_input_text_and_input_image(server: Running) -> None:
    client = AsyncOpenAI(base_url=f"{server.http}/v1", api_key="local")
    async with client.realtime.connect(model="default") as conn:
        await conn.session.update(
            session={"type": "realtime", "audio": {"input": {"turn_detection": None}}}
        )
        await conn.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_image", "image_url": red_square_png()}],
            }
        )
        await conn.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": QUESTION}],
            }
        )
        await conn.response.create()
        seen = await collect_until_done(conn)
    assert seen["types"].count("conversation.item.added") >= 2  # the image and the text
    assert "errors" not in seen, seen.get("errors")
    assert "paris" in words(seen["reply"]), seen["reply"]
    await still_serving(server)


async def test_aiortc_call_hears_paris(
    server: Running, question: AudioChunk, runtime: Runtime
) -> None:
    client = await rtc_call(
        server.http, AudioChunk.concat([question, AudioChunk.silence(2.0, 16_000)])
    )
    try:
        done = await client.wait_for("response.done", TURN_TIMEOUT_S)
        assert done["response"]["status"] == "completed", done
        reply = done["response"]["output"][0]["content"][0]["transcript"]
        assert "paris" in words(reply), reply
        user = await client.wait_for("conversation.item.input_audio_transcription.completed")
        assert "capital of france" in words(user["transcript"])
        assert "cadence.latency" in client.types() and "cadence.state" in client.types()
        for _ in range(200):
            if client.voiced_s() > 1.0:
                break
            await asyncio.sleep(0.05)
        assert client.voiced_s() > 1.0  # reply audio arrived as WebRTC media
        await asyncio.sleep(1.0)  # the rest of the reply
        heard = await asyncio.to_thread(
            runtime.asr.transcribe, client.heard_audio().to(16_000).mono_f32()
        )
        assert "paris" in words(heard.text), heard.text  # and it says Paris
    finally:
        await client.close()
    await still_serving(server)


async def test_client_vanishing_mid_reply(server: Running) -> None:
    ws = await websockets.connect(server.ws)
    assert json.loads(await ws.recv())["type"] == "session.created"
    await ws.send(
        json.dumps(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "Tell me a long story about the sea."}
                    ],
                },
            }
        )
    )
    await ws.send(json.dumps({"type": "response.create"}))
    async with asyncio.timeout(TURN_TIMEOUT_S):
        while json.loads(await ws.recv())["type"] != "response.output_audio.delta":
            pass
    ws.transport.abort()
    for _ in range(100):
        if server.ctx.active_sessions == 0:
            break
        await asyncio.sleep(0.05)
    assert server.ctx.active_sessions == 0
    client = AsyncOpenAI(base_url=f"{server.http}/v1", api_key="local")
    async with client.realtime.connect(model="default") as conn:
        await conn.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": QUESTION}],
            }
        )
        await conn.response.create()
        seen = await collect_until_done(conn)
    assert "paris" in words(seen["reply"])
    assert np.isfinite(seen["audio"])
