"""A spoken question answered through a Python tool, with the real models end to end: the
call is well-formed, the spoken reply uses the tool's result, a slow tool gets a holding
phrase whose audio counts as the turn's first reply audio."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from cadence.agent.filetalk import talk_file
from cadence.agent.runtime import Runtime
from cadence.bench.voices import synthesize
from cadence.config import Profile

pytestmark = pytest.mark.models
CALLS: list[dict[str, Any]] = []


def get_weather(city: str) -> dict[str, Any]:
    """Get the current weather in a city."""
    CALLS.append({"city": city})
    return {"city": city, "forecast": "sunny", "temperature_c": 21}


def get_weather_slowly(city: str) -> dict[str, Any]:
    """Get the current weather in a city."""
    time.sleep(1.5)
    return get_weather(city)


def _words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9 ]", " ", text.lower()).split())


async def test_spoken_weather_question_is_answered_from_the_tool(runtime: Runtime) -> None:
    CALLS.clear()
    profile = Profile(tools=({"function": "test_tool_voice:get_weather"},))
    result = await talk_file(
        runtime, synthesize("What's the weather in Paris?", "piper"), profile=profile
    )
    assert not result.errors
    assert CALLS == [{"city": "Paris"}]
    (turn,) = result.turns
    reply = _words(turn.reply)
    print(f"\n[tool voice] {turn.user!r} -> {turn.reply!r} latency={turn.latency}")
    assert "sunny" in reply or "21" in reply, reply
    assert turn.latency["tool"] is not None and turn.latency["v2v"] is not None


async def test_a_slow_tool_is_covered_by_a_spoken_holding_phrase(runtime: Runtime) -> None:
    CALLS.clear()
    tool = {"function": "test_tool_voice:get_weather_slowly", "name": "get_weather"}
    profile = Profile(tools=(tool,))
    result = await talk_file(
        runtime, synthesize("What's the weather in Paris?", "piper"), profile=profile
    )
    (turn,) = result.turns
    print(f"\n[tool voice, slow] {turn.reply!r} latency={turn.latency}")
    assert _words(turn.reply).startswith("one moment let me check")
    assert "tool:holding_phrase" in turn.latency["degraded"]
    # v2v is the phrase's first audio, well before the tool's 1.5 s are over
    assert turn.latency["v2v"] < turn.latency["tool"]
