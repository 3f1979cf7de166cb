"""Fuzzing every inbound surface of a real in-process server (fake sessions, no models).

Hypothesis drives the Realtime schema strategies here; `cadence.bench.fuzz` adds raw
frames, audio, images, SDP and HTTP. Outcome: an `error` event, other events or a clean
close, no exception in the server's log, a bystander session untouched, the server alive.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transport_fakes import fake_factory
from transport_harness import running_server

from cadence.bench.fuzz import CaseGenerator, FuzzOptions, bomb_png, run_fuzz
from cadence.transport.client_events import CLIENT_EVENT_TYPES
from cadence.transport.limits import ServerLimits

SMALL = ServerLimits(max_message_bytes=64 * 1024, max_events_per_s=10_000)


def _server_exceptions(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR or r.exc_info is not None
    ]


async def test_bench_fuzz_cases_against_a_real_server(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    async with running_server(session_factory=fake_factory(0.05), limits=SMALL) as srv:
        options = FuzzOptions(
            cases=300,
            seed=1,
            lanes=2,
            max_message_bytes=SMALL.max_message_bytes,
            time_limit_s=60.0,
            case_timeout_s=10.0,
        )
        report = await run_fuzz(srv.ws, options)
        assert srv.ctx.active_sessions == 0 or srv.ctx.active_sessions <= 3
    print(report.render())
    assert report.cases == 300
    assert report.ok, report.render()
    assert set(report.by_surface) >= {"event", "audio", "image", "raw", "http"}
    assert not _server_exceptions(caplog)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
FORMAT = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["audio/pcm", "audio/pcmu", "x"]),
        "rate": st.sampled_from([24000, 16000, 0, -1]),
    }
)
SESSION = st.fixed_dictionaries(
    {"type": st.sampled_from(["realtime", "transcription"])},
    optional={
        "instructions": st.text(max_size=50) | JSON,
        "audio": st.fixed_dictionaries(
            {},
            optional={
                "input": st.fixed_dictionaries(
                    {},
                    optional={
                        "format": FORMAT,
                        "turn_detection": st.none()
                        | st.fixed_dictionaries(
                            {"type": st.sampled_from(["server_vad", "semantic_vad", "nope"])}
                        ),
                    },
                )
            },
        ),
        "output_modalities": st.lists(st.sampled_from(["text", "audio", "video"]), max_size=2),
        "tools": JSON,
        "tool_choice": JSON,
    },
)
CONTENT = st.fixed_dictionaries(
    {"type": st.sampled_from(["input_text", "input_audio", "input_image", "text", "bogus"])},
    optional={
        "text": st.text(max_size=30) | JSON,
        "audio": st.text(max_size=30),
        "image_url": st.text(max_size=30),
        "transcript": JSON,
    },
)
ITEM = st.fixed_dictionaries(
    {"type": st.sampled_from(["message", "function_call_output", "function_call", "x"])},
    optional={
        "role": st.sampled_from(["user", "assistant", "system", "tool"]) | JSON,
        "content": st.lists(CONTENT, max_size=3) | JSON,
        "call_id": st.text(max_size=10) | JSON,
        "output": st.text(max_size=10) | JSON,
        "id": JSON,
    },
)
EVENT = st.one_of(
    st.fixed_dictionaries({"type": st.just("session.update"), "session": SESSION | JSON}),
    st.fixed_dictionaries(
        {"type": st.just("conversation.item.create"), "item": ITEM},
        optional={"previous_item_id": JSON},
    ),
    st.fixed_dictionaries(
        {"type": st.just("conversation.item.truncate")},
        optional={"item_id": JSON, "audio_end_ms": JSON, "content_index": JSON},
    ),
    st.fixed_dictionaries(
        {"type": st.just("input_audio_buffer.append"), "audio": st.text(max_size=40) | JSON}
    ),
    st.fixed_dictionaries(
        {"type": st.sampled_from(sorted(CLIENT_EVENT_TYPES))},
        optional={"response": JSON, "event_id": JSON},
    ),
    st.dictionaries(st.text(max_size=8), JSON, max_size=4),
)


async def test_schema_events_over_a_live_websocket(caplog: pytest.LogCaptureFixture) -> None:
    """~200 hypothesis events down one session; each is answered (probe) and it stays open."""
    caplog.set_level(logging.WARNING)
    async with running_server(session_factory=fake_factory(0.05), limits=SMALL) as srv:
        async with websockets.connect(srv.ws) as ws, websockets.connect(srv.ws) as other:
            await ws.recv()
            await other.recv()
            seen: list[dict[str, Any]] = []

            @settings(
                max_examples=200,
                deadline=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )
            @given(EVENT)
            def feed(event: dict[str, Any]) -> None:
                seen.append(event)

            feed()
            for n, event in enumerate(seen):
                await ws.send(json.dumps(event))
                await ws.send(json.dumps({"type": "cadence.probe", "event_id": f"p{n}"}))
                async with asyncio.timeout(10):
                    while True:
                        reply = json.loads(await ws.recv())
                        if reply.get("type") == "error" and reply["error"]["event_id"] == f"p{n}":
                            break
            await other.send('{"type":"input_audio_buffer.clear"}')
            async with asyncio.timeout(5):
                assert json.loads(await other.recv())["type"] == "input_audio_buffer.cleared"
    assert len(seen) >= 100
    assert not _server_exceptions(caplog)


def test_generator_is_seeded_and_covers_every_surface() -> None:
    a = [CaseGenerator(7).case() for _ in range(1)]
    gen_a, gen_b = (
        CaseGenerator(7, max_message_bytes=4096),
        CaseGenerator(7, max_message_bytes=4096),
    )
    cases_a = [gen_a.case() for _ in range(400)]
    assert cases_a == [gen_b.case() for _ in range(400)]
    assert {c.surface for c in cases_a} == {"event", "audio", "image", "raw", "sdp", "http"}
    assert a


def test_bomb_png_is_refused_by_pixel_count_before_decoding() -> None:
    from cadence.errors import LimitExceeded
    from cadence.transport.images import load_client_image

    with pytest.raises(LimitExceeded, match="pixel"):
        load_client_image(bomb_png(100_000, 100_000), max_bytes=1 << 20, max_pixels=4096**2)
