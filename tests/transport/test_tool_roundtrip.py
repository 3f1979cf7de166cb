"""The official openai SDK runs a client-side tool round trip against `cadence serve`:
session.update tools → function_call in response.done → function_call_output → the answer.

Skipped until the transport carries the tool hook-up lines (docs/tools.md, "Hook-up").
"""

from __future__ import annotations

import asyncio
import json
import sys
import typing
from pathlib import Path
from typing import Any

import pytest
from openai import AsyncOpenAI
from transport_harness import running_server

from cadence.agent.runtime import Runtime
from cadence.agent.session import Session, SessionOptions
from cadence.transport import client_events as ce

sys.path.insert(0, str(Path(__file__).parents[1] / "agent"))
from tool_fakes import FakeASR, FakeLLM, FakeTTS  # type: ignore[import-not-found]

HOOKED = "SetTools" in {getattr(t, "__name__", "") for t in typing.get_args(ce.Command)}
pytestmark = pytest.mark.skipif(not HOOKED, reason="tool hook-up lines not in the transport yet")
QUESTION = "What's the weather in Paris?"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
RESULT = json.dumps({"city": "Paris", "forecast": "sunny", "temperature_c": 21})


async def _until_done(conn: Any) -> list[Any]:
    events = []
    async with asyncio.timeout(60):
        async for event in conn:
            events.append(event)
            if event.type == "response.done":
                break
    return events


async def _round_trip(url: str) -> tuple[list[Any], list[Any]]:
    client = AsyncOpenAI(base_url=f"{url}/v1", api_key="local")
    async with client.realtime.connect(model="default") as conn:
        await conn.session.update(
            session={
                "type": "realtime",
                "tools": [WEATHER],
                "tool_choice": "auto",
                "audio": {"input": {"turn_detection": None}},
            }
        )
        text = {"type": "input_text", "text": QUESTION}
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [text]}
        )
        await conn.response.create()
        first = await _until_done(conn)
        calls = [o for o in first[-1].response.output if o.type == "function_call"]
        assert len(calls) == 1 and calls[0].name == "get_weather", [e.type for e in first]
        output = {"type": "function_call_output", "call_id": calls[0].call_id, "output": RESULT}
        await conn.conversation.item.create(item=output)
        await conn.response.create()
        return first, await _until_done(conn)


def _transcript(events: list[Any]) -> str:
    return "".join(e.delta for e in events if e.type == "response.output_audio_transcript.delta")


async def test_sdk_client_tool_round_trip() -> None:
    runtime = Runtime(asr=FakeASR(), llm=FakeLLM(), tts=FakeTTS())  # type: ignore[arg-type]

    def factory(profile: Any, turn_detection: bool) -> Session:
        return Session(runtime, profile, options=SessionOptions(turn_detection=turn_detection))

    async with running_server(session_factory=factory) as srv:
        first, second = await _round_trip(srv.http)
    types = [e.type for e in first]
    assert "error" not in types
    assert types.index("response.function_call_arguments.done") < types.index("response.done")
    done = next(e for e in first if e.type == "response.function_call_arguments.done")
    assert json.loads(done.arguments) == {"city": "Paris"}
    assert "sunny" in _transcript(second) and second[-1].response.status == "completed"


@pytest.mark.models
async def test_sdk_client_tool_round_trip_with_the_embedded_model(runtime: Runtime) -> None:
    async with running_server(runtime=runtime) as srv:
        first, second = await _round_trip(srv.http)
    call = next(o for o in first[-1].response.output if o.type == "function_call")
    assert json.loads(call.arguments) == {"city": "Paris"}
    reply = _transcript(second).lower()
    print(f"\n[sdk tool round trip, embedded model] {reply!r}")
    assert "sunny" in reply or "21" in reply
