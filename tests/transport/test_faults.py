"""Faults: clients vanishing mid-reply (WebSocket, WebRTC), a session raising; no leaks after."""

from __future__ import annotations

import asyncio
import json

import websockets
from transport_fakes import FakeSession, fake_factory
from transport_harness import rtc_call, running_server

from cadence.bench.fuzz import CaseGenerator, _sdp_case
from cadence.transport import client_events as ce


async def _settle(baseline: int, within_s: float = 10.0) -> int:
    """Tasks alive once the server has finished cleaning up (bounded wait)."""
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        count = len(asyncio.all_tasks())
        if count <= baseline or asyncio.get_running_loop().time() > deadline:
            return count
        await asyncio.sleep(0.05)


async def test_websocket_client_vanishing_mid_reply_leaks_no_task() -> None:
    async with running_server(session_factory=fake_factory(2.0)) as srv:
        baseline = len(asyncio.all_tasks())
        for _ in range(3):
            ws = await websockets.connect(srv.ws)
            await ws.recv()
            item = {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "hi"}],
            }
            await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
            await ws.send(json.dumps({"type": "response.create"}))
            while json.loads(await ws.recv())["type"] != "response.output_audio.delta":
                pass
            ws.transport.abort()  # vanish: no close frame  # type: ignore[attr-defined]
        assert await _settle(baseline) <= baseline
        assert srv.ctx.active_sessions == 0
        assert all(s.closed for s in FakeSession.instances[-3:])


async def test_webrtc_client_vanishing_ends_the_call() -> None:
    async with running_server(session_factory=fake_factory(2.0)) as srv:
        baseline = len(asyncio.all_tasks())
        client = await rtc_call(srv.http)
        await client.wait_for("session.created")
        client.send({"type": "response.create"})
        await client.wait_for("response.created")
        await client.close()  # gone without hang-up
        for _ in range(200):
            if not srv.ctx.calls and srv.ctx.active_sessions == 0:
                break
            await asyncio.sleep(0.05)
        assert not srv.ctx.calls and srv.ctx.active_sessions == 0
        assert await _settle(baseline, 15.0) <= baseline


class _Exploding(FakeSession):
    def request_response(self, text: str | None = None) -> None:
        raise RuntimeError("a bug in the session")


async def test_a_session_raising_is_an_error_event_and_the_session_goes_on() -> None:
    async with running_server(session_factory=lambda p, t: _Exploding(p, t, 0.05)) as srv:
        async with websockets.connect(srv.ws) as ws:
            await ws.recv()
            await ws.send('{"type":"response.create"}')
            error = json.loads(await ws.recv())
            assert error["type"] == "error" and error["error"]["type"] == "server_error"
            await ws.send('{"type":"input_audio_buffer.clear"}')
            assert json.loads(await ws.recv())["type"] == "input_audio_buffer.cleared"


def test_lone_surrogates_are_refused_at_the_edge() -> None:
    """Found by `cadence bench fuzz`: "\\ud800" reached the tokenizer and ended the session."""
    raw = (
        '{"type":"conversation.item.create","item":{"type":"message","role":"user",'
        '"content":[{"type":"input_text","text":"a\\ud800"}]}}'
    )
    try:
        ce.decode_event(raw, 1 << 20)
    except ce.Rejected as rejected:
        assert rejected.cause.code == "invalid_event"
    else:
        raise AssertionError("accepted a lone surrogate")


async def test_mutated_sdp_offers_never_give_500() -> None:
    """Found by `cadence bench fuzz`: offers aiortc parses but cannot answer gave 500."""
    generator = CaseGenerator(0, max_message_bytes=4096)
    offers = [generator._sdp() for _ in range(40)]
    async with running_server(session_factory=fake_factory(0.05)) as srv:
        outcomes = [await _sdp_case(srv.http, offer, None, 10.0) for offer in offers]
    assert [o for o in outcomes if o[1] is not None] == []


def test_soak_sampler_reads_this_process() -> None:
    import os

    from cadence.bench.server_process import ProcessSample, growth, sample_process

    sample = sample_process(os.getpid(), 1.0)
    assert sample.rss_mb > 1 and sample.fds > 0 and sample.threads >= 1
    assert 0 < sample.anon_mb < sample.rss_mb and 0 < sample.pss_mb <= sample.rss_mb + 1
    samples = [
        ProcessSample(t, 100.0 + (t >= 50) * 10, 10, 4, pss_mb=80.0, anon_mb=50.0 + (t >= 50) * 8)
        for t in range(0, 101, 10)
    ]
    assert growth(samples) == {
        "rss_pct": 10.0,
        "pss_pct": 0.0,
        "anon_mb": 8.0,
        "fds": 0.0,
        "threads": 0.0,
    }
