"""The server with model-free fake sessions: routes, WebSocket behaviour, limits, WebRTC calls.

Everything real except the models: uvicorn on 127.0.0.1:0, the websockets client, the
official openai SDK, aiortc peers on loopback.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import numpy as np
import pytest
import websockets
from aiortc.mediastreams import VideoStreamTrack
from openai import AsyncOpenAI
from transport_fakes import FakeSession, fake_factory, tone
from transport_harness import http, rtc_call, running_server

from cadence.transport.limits import ServerLimits
from cadence.video.frames import VideoFrame as CadenceFrame


@pytest.fixture(autouse=True)
def _fresh_fakes() -> None:
    FakeSession.instances.clear()


async def recv_until(ws: Any, kind: str, within_s: float = 10.0) -> list[dict[str, Any]]:
    """Events up to and including the first of `kind`."""
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(within_s):
        while True:
            event = json.loads(await ws.recv())
            seen.append(event)
            if event["type"] == kind:
                return seen


def pcm_b64(chunk: Any) -> str:
    return base64.b64encode(chunk.to(24_000, dtype="int16").to_pcm16_bytes()).decode()


async def test_health_ready_metrics_and_page() -> None:
    async with running_server(session_factory=fake_factory()) as srv:
        health = json.loads((await http("GET", f"{srv.http}/healthz")).text)
        assert health["status"] == "ok" and health["worker"] > 0
        assert (await http("GET", f"{srv.http}/readyz")).status == 200
        srv.ctx.ready = False
        assert (await http("GET", f"{srv.http}/readyz")).status == 503
        srv.ctx.ready = True
        metrics = (await http("GET", f"{srv.http}/metrics")).text
        assert "cadence_ready 1" in metrics and "# TYPE cadence_v2v_ms histogram" in metrics
        page = await http("GET", f"{srv.http}/")
        assert page.status == 200 and "<title>cadence" in page.text
        assert "//" not in page.text.replace("http://www.w3.org", "")  # no CDN, nothing remote
        assert (await http("GET", f"{srv.http}/static/app.js")).status == 200
        assert (await http("GET", f"{srv.http}/static/secrets.txt")).status == 404


async def test_websocket_text_turn_and_bad_input_keep_the_session() -> None:
    async with running_server(session_factory=fake_factory()) as srv:
        async with websockets.connect(srv.ws + "?model=default") as ws:
            created = await recv_until(ws, "session.created")
            assert created[-1]["session"]["model"] == "default"
            for bad in (
                "{oops",
                '{"type": "nope"}',
                json.dumps({"type": "input_audio_buffer.append", "audio": "***"}),
            ):
                await ws.send(bad)
                (error,) = await recv_until(ws, "error")
                assert error["error"]["message"]
            await ws.send(
                json.dumps(
                    {
                        "type": "conversation.item.create",
                        "item": {
                            "type": "message",
                            "role": "user",
                            "content": [{"type": "input_text", "text": "Capital of France?"}],
                        },
                    }
                )
            )
            added = await recv_until(ws, "conversation.item.done")
            assert added[0]["type"] == "conversation.item.added"
            await ws.send(json.dumps({"type": "response.create"}))
            events = await recv_until(ws, "response.done")
            transcript = "".join(
                e["delta"] for e in events if e["type"] == "response.output_audio_transcript.delta"
            )
            assert "Paris" in transcript
            assert any(e["type"] == "response.output_audio.delta" for e in events)
            assert json.loads(events[-1]["response"]["metadata"]["latency"])["v2v"] == 60.0
        await asyncio.sleep(0.1)
        assert FakeSession.instances[0].closed


async def test_unknown_model_is_an_error_on_the_default_profile() -> None:
    async with running_server(session_factory=fake_factory()) as srv:
        async with websockets.connect(srv.ws + "?model=gpt-realtime") as ws:
            events = await recv_until(ws, "error")
            assert events[0]["type"] == "session.created"
            assert events[0]["session"]["model"] == "default"
            assert "unknown agent profile 'gpt-realtime'" in events[-1]["error"]["message"]


async def test_openai_sdk_speaks_to_the_server() -> None:
    async with running_server(session_factory=fake_factory()) as srv:
        client = AsyncOpenAI(base_url=f"{srv.http}/v1", api_key="unused")
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
            speech = np.concatenate([np.zeros(2400), tone(0.8).samples[:, 0], np.zeros(12000)])
            chunk = (speech * 32767).astype("<i2").tobytes()
            for i in range(0, len(chunk), 9600):
                await conn.input_audio_buffer.append(
                    audio=base64.b64encode(chunk[i : i + 9600]).decode()
                )
            kinds: list[str] = []
            transcript = ""
            audio_bytes = 0
            async with asyncio.timeout(10):
                async for event in conn:
                    kinds.append(event.type)
                    if event.type == "conversation.item.input_audio_transcription.completed":
                        transcript = event.transcript
                    if event.type == "response.output_audio.delta":
                        audio_bytes += len(base64.b64decode(event.delta))
                    if event.type == "response.done":
                        break
        assert "input_audio_buffer.speech_started" in kinds and "session.updated" in kinds
        assert transcript == "what is the capital of france"
        assert audio_bytes > 24_000  # > 0.5 s of 24 kHz pcm16


async def test_oversized_message_error_then_hard_limit_close() -> None:
    limits = ServerLimits(max_message_bytes=4096)
    async with running_server(session_factory=fake_factory(), limits=limits) as srv:
        async with websockets.connect(srv.ws) as ws:
            await recv_until(ws, "session.created")
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": "A" * 5000}))
            (error,) = await recv_until(ws, "error")
            assert error["error"]["code"] == "limit_exceeded"
            await ws.send("x" * 10_000)  # past 2x the limit: the WebSocket layer closes
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await recv_until(ws, "never")
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_session_limit_and_idle_timeout() -> None:
    limits = ServerLimits(max_sessions=1, idle_timeout_s=0.5)
    async with running_server(session_factory=fake_factory(), limits=limits) as srv:
        async with websockets.connect(srv.ws) as first:
            await recv_until(first, "session.created")
            async with websockets.connect(srv.ws) as second:
                (error,) = await recv_until(second, "error")
                assert "limit of 1 concurrent sessions" in error["error"]["message"]
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await second.recv()
                assert closed.value.rcvd.code == 1013
            (idle,) = await recv_until(first, "error")
            assert "idle" in idle["error"]["message"]
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await first.recv()
            assert closed.value.rcvd.code == 1000 and closed.value.rcvd.reason == "idle timeout"
        # the slot is free again
        async with websockets.connect(srv.ws) as third:
            await recv_until(third, "session.created")


async def test_client_vanishing_mid_reply_leaves_the_server_serving() -> None:
    async with running_server(session_factory=fake_factory(reply_s=5.0)) as srv:
        ws = await websockets.connect(srv.ws)
        await recv_until(ws, "session.created")
        await ws.send(
            json.dumps(
                {
                    "type": "conversation.item.create",
                    "item": {
                        "type": "message",
                        "role": "user",
                        "content": [{"type": "input_text", "text": "hi"}],
                    },
                }
            )
        )
        await ws.send(json.dumps({"type": "response.create"}))
        await recv_until(ws, "response.created")
        ws.transport.abort()  # no close frame: the peer just disappears
        for _ in range(100):
            if FakeSession.instances[0].closed:
                break
            await asyncio.sleep(0.05)
        assert FakeSession.instances[0].closed
        assert srv.ctx.active_sessions == 0
        async with websockets.connect(srv.ws) as again:
            await recv_until(again, "session.created")


async def test_manual_turns_commit_and_response_create() -> None:
    async with running_server(session_factory=fake_factory()) as srv:
        async with websockets.connect(srv.ws) as ws:
            await recv_until(ws, "session.created")
            await ws.send(
                json.dumps(
                    {
                        "type": "session.update",
                        "session": {"audio": {"input": {"turn_detection": None}}},
                    }
                )
            )
            await recv_until(ws, "session.updated")
            assert FakeSession.instances[0].options.turn_detection is False
            await ws.send(
                json.dumps({"type": "input_audio_buffer.append", "audio": pcm_b64(tone(0.5))})
            )
            await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
            events = await recv_until(ws, "conversation.item.input_audio_transcription.completed")
            committed = [e for e in events if e["type"] == "input_audio_buffer.committed"]
            assert len(committed) == 1
            assert events[-1]["item_id"] == committed[0]["item_id"]
            await ws.send(json.dumps({"type": "response.create"}))
            done = await recv_until(ws, "response.done")
            assert done[-1]["response"]["status"] == "completed"


async def test_input_image_reaches_the_session() -> None:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (0, 0, 255)).save(buf, format="JPEG")
    url = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
    async with running_server(session_factory=fake_factory()) as srv:
        async with websockets.connect(srv.ws) as ws:
            await recv_until(ws, "session.created")
            await ws.send(
                json.dumps(
                    {
                        "type": "conversation.item.create",
                        "item": {
                            "type": "message",
                            "role": "user",
                            "content": [{"type": "input_image", "image_url": url}],
                        },
                    }
                )
            )
            await recv_until(ws, "conversation.item.done")
            corrupt = "data:image/png;base64," + base64.b64encode(b"\x89PNG garbage").decode()
            await ws.send(
                json.dumps(
                    {
                        "type": "conversation.item.create",
                        "event_id": "img2",
                        "item": {
                            "type": "message",
                            "role": "user",
                            "content": [{"type": "input_image", "image_url": corrupt}],
                        },
                    }
                )
            )
            (error,) = await recv_until(ws, "error")
            assert (
                error["error"]["code"] == "invalid_image" and error["error"]["event_id"] == "img2"
            )
        (png,) = FakeSession.instances[0].images
        assert png.startswith(b"\x89PNG")  # re-encoded: no EXIF or other metadata
        assert Image.open(io.BytesIO(png)).size == (64, 48)


async def test_webrtc_call_hears_reply_and_gets_data_channel_events() -> None:
    speech = tone(0.8, 48_000)
    async with running_server(session_factory=fake_factory()) as srv:
        client = await rtc_call(srv.http, speech, video=VideoStreamTrack())
        try:
            await client.wait_for("session.created")
            stopped = await client.wait_for("input_audio_buffer.speech_stopped")
            assert stopped["cadence_ms_ago"] >= 0
            done = await client.wait_for("response.done")
            assert done["response"]["status"] == "completed"
            await client.wait_for("cadence.latency")
            assert "cadence.state" in client.types()
            transcript = "".join(
                e["delta"]
                for e in client.events
                if e["type"] == "response.output_audio_transcript.delta"
            )
            assert "Paris" in transcript
            for _ in range(100):
                if client.loud_samples > 48_000 * 0.3:
                    break
                await asyncio.sleep(0.05)
            assert client.loud_samples > 48_000 * 0.3  # the reply tone arrived as media
            session = FakeSession.instances[0]
            assert session.played and session.played[-1][1] > 300  # paced position reported
            assert session.frames  # camera frames, converted to the session's RGB frames
            assert isinstance(session.frames[0], CadenceFrame) and session.frames[0].width > 0
            client.send({"type": "nonsense"})
            error = await client.wait_for("error")
            assert "unknown client event" in error["error"]["message"]
        finally:
            await client.close()
        for _ in range(100):
            if not srv.ctx.calls:
                break
            await asyncio.sleep(0.05)
        assert not srv.ctx.calls and srv.ctx.active_sessions == 0


@pytest.mark.parametrize(
    "body", ["", "hello", "v=0\r\nthis is not sdp\r\n", "v=0\r\n" + "a" * 70_000]
)
async def test_bad_sdp_is_400_and_the_server_goes_on(body: str) -> None:
    async with running_server(session_factory=fake_factory()) as srv:
        response = await http(
            "POST", f"{srv.http}/v1/realtime/calls", body, {"Content-Type": "application/sdp"}
        )
        assert response.status == 400
        assert response.json()["error"]["message"]
        assert srv.ctx.active_sessions == 0
        async with websockets.connect(srv.ws) as ws:
            await recv_until(ws, "session.created")


async def test_hangup_ends_the_call() -> None:
    async with running_server(session_factory=fake_factory()) as srv:
        client = await rtc_call(srv.http, None)
        try:
            await client.wait_for("session.created")
            (call_id,) = srv.ctx.calls
            missing = await http("POST", f"{srv.http}/v1/realtime/calls/nope/hangup", b"")
            assert missing.status == 404
            ok = await http("POST", f"{srv.http}/v1/realtime/calls/{call_id}/hangup", b"")
            assert ok.status == 200
            for _ in range(100):
                if not srv.ctx.calls:
                    break
                await asyncio.sleep(0.05)
            assert not srv.ctx.calls and FakeSession.instances[0].closed
        finally:
            await client.close()


async def test_shutdown_closes_websockets_and_calls() -> None:
    async with running_server(session_factory=fake_factory()) as srv:
        client = await rtc_call(srv.http, None)
        await client.wait_for("session.created")
        ws = await websockets.connect(srv.ws)
        await recv_until(ws, "session.created")
    # the server has stopped: every session is closed, the WebSocket was told why
    try:
        assert len(FakeSession.instances) == 2
        assert all(s.closed for s in FakeSession.instances)
        assert srv.ctx.active_sessions == 0 and not srv.ctx.calls
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
    finally:
        await client.close()
