"""Every limit of the server's edge, each with its stated overflow policy; secrets never logged."""

from __future__ import annotations

import asyncio
import base64
import json
import logging

import pytest
import websockets
from transport_fakes import fake_factory
from transport_harness import TOKEN, http, running_server

from cadence.bench.fuzz import bomb_png
from cadence.errors import LimitExceeded
from cadence.transport.images import load_client_image
from cadence.transport.limits import EventRate, ServerLimits
from cadence.transport.protocol import RATE_LIMITED, RealtimeProtocol


def _protocol(limits: ServerLimits, clock: list[float] | None = None) -> RealtimeProtocol:
    now = clock or [0.0]
    return RealtimeProtocol(
        model="m", instructions="", voice="v", limits=limits, monotonic=lambda: now[0]
    )


def _codes(protocol: RealtimeProtocol, event: dict[str, object] | str) -> list[str]:
    raw = event if isinstance(event, str) else json.dumps(event)
    return [e["error"]["code"] for e in protocol.receive(raw).events if e["type"] == "error"]


def test_event_rate_bucket() -> None:
    bucket = EventRate(10.0, 20.0)
    assert sum(bucket.allow(0.0) for _ in range(50)) == 20
    assert sum(bucket.allow(1.0) for _ in range(50)) == 10


def test_event_rate_limit_drops_with_a_clear_error() -> None:
    clock = [0.0]
    protocol = _protocol(ServerLimits(max_events_per_s=5.0), clock)
    clear = {"type": "input_audio_buffer.clear"}
    results = [_codes(protocol, clear) for _ in range(15)]
    assert results[:10] == [[]] * 10 and results[10:] == [[RATE_LIMITED]] * 5
    clock[0] = 1.0  # a second later, 5 more
    assert [_codes(protocol, clear) for _ in range(6)] == [[]] * 5 + [[RATE_LIMITED]]
    assert ServerLimits.from_dict({"max_events_per_s": 50}).max_events_per_s == 50.0


def test_message_size_limit() -> None:
    protocol = _protocol(ServerLimits(max_message_bytes=1000))
    assert _codes(protocol, json.dumps({"type": "response.cancel", "pad": "x" * 2000})) == [
        "limit_exceeded"
    ]


def test_buffered_audio_limit_until_commit_or_clear() -> None:
    protocol = _protocol(ServerLimits(max_buffered_audio_s=1.0))
    protocol.config["audio"]["input"]["turn_detection"] = None  # manual turns
    half_s = base64.b64encode(b"\0\0" * 12_000).decode()
    append = {"type": "input_audio_buffer.append", "audio": half_s}
    assert [_codes(protocol, append) for _ in range(3)] == [[], [], ["limit_exceeded"]]
    assert _codes(protocol, {"type": "input_audio_buffer.clear"}) == []
    assert _codes(protocol, append) == []


def test_image_byte_and_pixel_limits() -> None:
    with pytest.raises(LimitExceeded, match="byte"):
        load_client_image(b"\0" * 2000, max_bytes=1000, max_pixels=100)
    with pytest.raises(LimitExceeded, match="pixel"):
        load_client_image(bomb_png(200, 200), max_bytes=10_000, max_pixels=100 * 100)
    protocol = _protocol(ServerLimits(max_image_bytes=1000))
    url = "data:image/png;base64," + base64.b64encode(b"\0" * 5000).decode()
    item = {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_image", "image_url": url}],
    }
    assert _codes(protocol, {"type": "conversation.item.create", "item": item}) == [
        "limit_exceeded"
    ]


def test_protocol_state_is_bounded() -> None:
    """A long session's bookkeeping does not grow without bound (items, echoed texts)."""
    protocol = _protocol(ServerLimits(max_items=8, max_events_per_s=1e9))
    for n in range(500):
        item = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": f"t{n}"}],
        }
        step = protocol.receive(json.dumps({"type": "conversation.item.create", "item": item}))
        protocol.item_added(step.commands[0])  # type: ignore[arg-type]
        protocol.expect_user_echo(f"t{n}")
    assert len(protocol._pending_texts) <= 16
    assert len(protocol._items) <= 8


async def test_live_rate_limit_max_sessions_and_idle_timeout() -> None:
    limits = ServerLimits(max_events_per_s=20.0, max_sessions=1, idle_timeout_s=0.5)
    async with running_server(session_factory=fake_factory(0.05), limits=limits) as srv:
        async with websockets.connect(srv.ws) as ws:
            await ws.recv()
            for _ in range(60):
                await ws.send('{"type":"input_audio_buffer.clear"}')
            codes = []
            async with asyncio.timeout(5):
                for _ in range(60):
                    event = json.loads(await ws.recv())
                    codes.append(event.get("error", {}).get("code"))
            assert RATE_LIMITED in codes
            async with websockets.connect(srv.ws) as second:  # over max_sessions
                busy = [json.loads(await second.recv())]
                with pytest.raises(websockets.ConnectionClosed):
                    await second.recv()
                assert busy[-1]["error"]["code"] == "limit_exceeded"
                assert second.close_code == 1013
            async with asyncio.timeout(5):
                rest = [json.loads(m) async for m in ws]  # idle: error, then close 1000
            assert "idle" in rest[-1]["error"]["message"] and ws.close_code == 1000
        for _ in range(100):  # the server's side finishes just after the close frame
            if srv.ctx.active_sessions == 0:
                break
            await asyncio.sleep(0.02)
        assert srv.ctx.active_sessions == 0


async def test_tokens_are_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-secret-value-123"
    async with running_server(token=TOKEN, session_factory=fake_factory(0.05)) as srv:
        for token in (TOKEN, wrong, "ek_99999999999_ab_cd"):
            headers = {"Authorization": f"Bearer {token}"}
            await http("POST", f"{srv.http}/v1/realtime/client_secrets", b"", headers)
            await http("GET", f"{srv.http}/metrics", None, headers)
            with pytest.raises(websockets.InvalidStatus):
                async with websockets.connect(
                    srv.ws, subprotocols=[f"openai-insecure-api-key.{wrong}"]
                ):  # type: ignore[list-item]
                    pass
        async with websockets.connect(
            srv.ws,
            subprotocols=["realtime", f"openai-insecure-api-key.{TOKEN}"],  # type: ignore[list-item]
        ) as ws:
            assert ws.subprotocol == "realtime"
            await ws.recv()
    server_records = [r for r in caplog.records if not r.name.startswith("websockets.client")]
    leaks = {r.name for r in server_records if TOKEN in f"{r.getMessage()} {r.args!r}"}
    assert not leaks
    text = "\n".join(f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in server_records)
    assert caplog.records  # the capture works
    assert TOKEN not in text and wrong not in text
