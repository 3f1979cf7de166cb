"""Tools: JSON schema from type hints, off-loop execution with timeouts, the decision rule,
the holding phrase when a tool is slow, and a client-side tool round trip in the session."""

from __future__ import annotations

import asyncio
import enum
import json
import threading
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Annotated, Any, Literal

import pytest
from tool_fakes import FakeLLM, Gate, Harness, weather_registry  # type: ignore[import-not-found]

from cadence.agent import outputs as out
from cadence.agent.tool_decision import (
    DecisionOptions,
    ToolChoice,
    candidates,
    decide,
    grounded,
    word_runs,
)
from cadence.agent.tools import ToolRegistry, ToolSpec, schema_from_function
from cadence.errors import ConfigError, InputError
from cadence.llm.base import ChatMessage
from cadence.llm.json_grammar import bounded_schema, max_json_chars


class Unit(enum.Enum):
    CELSIUS = "celsius"
    FAHRENHEIT = "fahrenheit"


def forecast(
    city: str,
    days: int,
    unit: Unit = Unit.CELSIUS,
    detail: Literal["short", "long"] = "short",
    hourly: bool = False,
    threshold: float | None = None,
    tags: list[str] | None = None,
    lang: Annotated[str, "An ISO language code"] = "en",
) -> dict[str, Any]:
    """Forecast the weather for a city.

    More text that is not the summary.

    Args:
        city: The city, e.g. Paris.
        days (int): How many days ahead.
    """
    return {"city": city, "days": days, "unit": unit, "detail": detail}


def test_schema_from_type_hints_and_docstring() -> None:
    description, schema = schema_from_function(forecast)
    assert description == "Forecast the weather for a city."
    assert schema == {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "The city, e.g. Paris."},
            "days": {"type": "integer", "description": "How many days ahead."},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": "celsius"},
            "detail": {"type": "string", "enum": ["short", "long"], "default": "short"},
            "hourly": {"type": "boolean", "default": False},
            "threshold": {"anyOf": [{"type": "number"}, {"type": "null"}], "default": None},
            "tags": {
                "anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}],
                "default": None,
            },
            "lang": {"type": "string", "description": "An ISO language code", "default": "en"},
        },
        "required": ["city", "days"],
    }


def _no_hint(city) -> str:  # type: ignore[no-untyped-def]
    return str(city)


def _dict_arg(options: dict[str, str]) -> str:
    return ""


def _star(*cities: str) -> str:
    return ""


@pytest.mark.parametrize("func", [_no_hint, _dict_arg, _star])
def test_functions_the_schema_cannot_describe_are_refused(func: Any) -> None:
    with pytest.raises(ConfigError):
        ToolRegistry().register(func)


async def test_sync_tools_run_in_a_worker_thread_and_the_loop_keeps_running() -> None:
    registry = ToolRegistry()
    threads: list[int] = []

    def slow(city: str) -> str:
        threads.append(threading.get_ident())
        time.sleep(0.2)
        return f"sunny in {city}"

    registry.register(slow)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    counting = asyncio.create_task(ticker())
    result = await registry.call("slow", {"city": "Paris"})
    counting.cancel()
    assert result.status == "completed" and result.output == "sunny in Paris"
    assert threads and threads[0] != threading.get_ident()
    assert ticks >= 10, "the event loop was blocked while the tool ran"


async def test_async_tools_values_and_enums_are_converted() -> None:
    registry = ToolRegistry()
    registry.register(forecast)
    result = await registry.call("forecast", {"city": "Paris", "days": 2, "unit": "fahrenheit"})
    assert result.status == "completed"
    assert json.loads(result.output) == {
        "city": "Paris",
        "days": 2,
        "unit": "fahrenheit",
        "detail": "short",
    }


async def test_timeouts_errors_and_bad_arguments_are_outputs_not_exceptions() -> None:
    registry = ToolRegistry()

    async def hang(city: str) -> str:
        await asyncio.sleep(10)
        return "never"

    def broken(city: str) -> str:
        raise RuntimeError("the weather service is down")

    def book(city: str) -> str:
        time.sleep(0.5)
        return "booked"

    registry.register(hang, timeout_s=0.05)
    registry.register(broken)
    registry.register(book, side_effects=True, timeout_s=0.05)
    started = time.perf_counter()
    timed_out = await registry.call("hang", {"city": "Paris"})
    assert time.perf_counter() - started < 1.0
    assert timed_out.status == "failed" and timed_out.timed_out
    assert "did not answer within 0.05 s" in json.loads(timed_out.output)["error"]
    failed = await registry.call("broken", {"city": "Paris"})
    assert "the weather service is down" in json.loads(failed.output)["error"]
    bad = await registry.call("hang", {"town": "Paris"})
    assert "lacks the required 'city'" in json.loads(bad.output)["error"]
    maybe = json.loads((await registry.call("book", {"city": "Paris"})).output)
    assert maybe["may_have_completed"] is True  # a side effect cut by a timeout may be done


def test_tools_from_the_profile_config() -> None:
    tables = [{"function": "test_tools:forecast", "side_effects": True, "keywords": ["rain"]}]
    registry = ToolRegistry.from_config(tables)
    spec = registry.get("forecast")
    assert spec is not None and spec.side_effects and spec.keywords == ("rain",)
    with pytest.raises(ConfigError):
        ToolRegistry.from_config([{"function": "test_tools:nothing_here"}])
    with pytest.raises(ConfigError):
        ToolRegistry.from_config([{"function": "test_tools:forecast", "colour": "red"}])
    with pytest.raises(ConfigError):
        DecisionOptions.from_dict({"decision": "vibes"})


# ---- the decision rule ------------------------------------------------------------------------

CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
WEATHER = ToolSpec("get_weather", "Get the current weather in a city.", CITY)
TIME = ToolSpec("get_time", "Get the current time in a city.", CITY)
TABLE = {"restaurant": {"type": "string"}, "time": {"type": "string"}}
BOOK = ToolSpec("book_table", "Book a restaurant table.", {"type": "object", "properties": TABLE})
TOOLS = [WEATHER, TIME, BOOK]


class Decoder:
    """Answers stage one with a fixed pick; records what it was asked."""

    def __init__(self, pick: str) -> None:
        self.pick = pick
        self.asked: list[Mapping[str, Any]] = []

    async def stream_json(
        self, messages: Sequence[ChatMessage], schema: Mapping[str, Any], *, prefix: str = ""
    ) -> AsyncIterator[str]:
        self.asked.append(schema)
        yield json.dumps(self.pick)


def _user(text: str) -> list[ChatMessage]:
    return [ChatMessage("system", "be brief"), ChatMessage("user", text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("What's the weather in Paris?", ["get_weather"]),
        ("Is it raining in London?", []),  # no tool word: answer (keywords could add "rain")
        ("What time is it in Tokyo?", ["get_time"]),  # named by get_time, only a field of book
        ("Book a table at Luigi's", ["book_table"]),
        ("Tell me a joke", []),
        ("What is the capital of France?", []),
    ],
)
def test_candidates_are_the_tools_the_words_name(text: str, expected: list[str]) -> None:
    assert [s.name for s in candidates(text, TOOLS)] == expected


async def test_the_decision_rule() -> None:
    auto = DecisionOptions()

    async def reason(text: str, options: DecisionOptions = auto, model: Any = None) -> str:
        decision = await decide(_user(text), TOOLS, options, model or Decoder("get_time"))
        return decision.reason + (f":{decision.tool.name}" if decision.tool else "")

    assert await reason("What's the weather in Paris?") == "keywords:get_weather"
    assert await reason("Tell me a joke") == "no_matching_tool"
    none = DecisionOptions(choice=ToolChoice("none"))
    assert await reason("What's the weather in Paris?", none) == "tool_choice_none"
    named = DecisionOptions(choice=ToolChoice.parse({"type": "function", "name": "book_table"}))
    assert await reason("Tell me a joke", named) == "named:book_table"
    required = DecisionOptions(choice=ToolChoice("required"))
    assert await reason("Tell me a joke", required) == "model_picked:get_time"
    model = DecisionOptions(decision="model")
    assert await reason("Tell me a joke", model, Decoder("none")) == "model_answered"
    # a backend that cannot decode JSON under a schema never calls
    assert await reason("What's the weather in Paris?", model=object()) == "backend_without_json"
    after = [*_user("What's the weather in Paris?"), ChatMessage("tool", "{}", name="c1")]
    decision = await decide(after, TOOLS, auto, Decoder("get_weather"))
    assert decision.reason == "after_tool_output"


def test_grounded_strings_come_from_the_users_words() -> None:
    runs = word_runs("What's the weather in New York City?")
    assert "New York City" in runs and "York" in runs and "City?" not in runs
    schema = grounded(WEATHER.parameters, "What's the weather in Paris?")
    assert schema["properties"]["city"]["enum"][0] == "What's"
    assert "Paris" in schema["properties"]["city"]["enum"]


def test_bounded_schemas_have_a_finite_longest_text() -> None:
    schema = bounded_schema(
        {
            "type": "object",
            "properties": {
                "q": {"type": "string"},
                "n": {"type": "integer"},
                "xs": {"type": "array", "items": {"type": "number"}},
                "any": {},
            },
        }
    )
    assert schema["properties"]["q"]["maxLength"] == 64
    assert schema["properties"]["xs"]["maxItems"] == 8
    assert schema["additionalProperties"] is False
    longest = json.dumps({"q": "\\u0000" * 64, "n": -(10**15), "xs": [-1.5e300] * 8, "any": "x"})
    assert max_json_chars(schema) >= len(longest)


# ---- in the session --------------------------------------------------------------------------


async def test_a_slow_tool_gets_a_holding_phrase_and_its_stage_in_the_latency() -> None:
    gate = Gate()
    async with Harness(tools=weather_registry(gate), tool_budget_ms=40.0) as h:
        h.ask("What's the weather in Paris?")
        assert await h.until(lambda: bool(h.of(out.ToolCallStarted)))
        started = time.perf_counter()
        assert await h.until(lambda: bool(h.of(out.ResponseText)), limit=200)
        phrase_after_s = time.perf_counter() - started
        assert h.of(out.ResponseText)[0].text == "One moment, let me check."
        assert not h.of(out.ToolCallFinished), "the phrase comes while the tool still runs"
        assert phrase_after_s < 0.5
        gate.opened.set()
        await h.finish()
        done = h.of(out.ResponseDone)[0]
        assert done.status == "completed"
        latency = done.latency
        assert latency["tool"] is not None and latency["v2v"] is not None
        assert any(b.startswith("tool") for b in latency["budget_breaches"])
        assert "tool:holding_phrase" in latency["degraded"]
        reply = h.of(out.AssistantTurnCommitted)[0].text
        assert reply.startswith("One moment, let me check.") and "sunny" in reply


async def test_a_fast_tool_needs_no_holding_phrase() -> None:
    gate = Gate()
    gate.opened.set()
    async with Harness(tools=weather_registry(gate), tool_budget_ms=2000.0) as h:
        h.ask("What's the weather in Paris?")
        await h.finish()
        texts = " ".join(t.text for t in h.of(out.ResponseText))
        assert "One moment" not in texts and "sunny" in texts
        assert h.of(out.ResponseDone)[0].latency["budget_breaches"] == []


async def test_client_tool_round_trip_in_the_session() -> None:
    async with Harness(FakeLLM(arguments='{"city": "Paris"}')) as h:
        h.session.set_tools([ToolSpec("get_weather", "Get the weather.", WEATHER.parameters)])
        h.ask("What's the weather in Paris?")
        await h.finish()
        started = h.of(out.ToolCallStarted)[0]
        assert started.client and started.name == "get_weather"
        assert h.of(out.ToolCallArguments)[-1].arguments == '{"city": "Paris"}'
        assert h.of(out.ResponseDone)[0].status == "completed"
        assert not h.of(out.ResponseText), "a client call ends the response without speech"
        with pytest.raises(InputError):
            h.session.add_function_output("call_unknown", "{}")
        h.session.add_function_output(started.call_id, '{"forecast": "rain"}')
        with pytest.raises(InputError):
            h.session.add_function_output(started.call_id, "{}")  # one output per call
        h.session.request_response()
        await h.finish()
        assert "rain" in h.of(out.AssistantTurnCommitted)[-1].text
        roles = [m.role for m in h.session.history.items]
        assert roles == ["user", "tool", "assistant"]
        assert h.session.history.tool_problems() == []


def test_a_toml_profile_configures_tools_and_their_choice(tmp_path: Any) -> None:
    from tool_fakes import FakeASR, FakeTTS

    from cadence.agent.runtime import Runtime
    from cadence.agent.session import Session
    from cadence.config import load_config
    from cadence.llm.factory import SESSION_KEYS

    path = tmp_path / "cadence.toml"
    path.write_text(
        """
[profiles.concierge.llm.tool_calling]
choice = "required"
holding_phrase = "Just a second."

[[profiles.concierge.tools]]
function = "test_tools:forecast"
side_effects = false
timeout_s = 3
"""
    )
    profile = load_config(path).profile("concierge")
    assert "tool_calling" in SESSION_KEYS  # not passed to the backend's options
    runtime = Runtime(asr=FakeASR(), llm=FakeLLM(), tts=FakeTTS())  # type: ignore[arg-type]
    session = Session(runtime, profile)
    assert session.tools.options.choice == ToolChoice("required")
    assert session.tools.options.holding_phrase == "Just a second."
    spec = session.tools.registry.get("forecast")
    assert spec is not None and spec.timeout_s == 3
