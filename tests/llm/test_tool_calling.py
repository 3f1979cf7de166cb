"""Tool calls from the real embedded model (SmolLM2-135M): the right tool with the user's
arguments, direct answers when no tool fits, and JSON that is well-formed by construction."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from cadence.agent.tool_decision import DecisionOptions, argument_deltas, decide
from cadence.agent.tools import ToolRegistry, check_arguments
from cadence.llm.base import ChatMessage
from cadence.llm.json_grammar import bounded_schema
from cadence.llm.llamacpp import LlamaCppBackend, LlamaCppOptions

pytestmark = pytest.mark.models
SYSTEM = ChatMessage("system", "You are a helpful assistant. Answer in one short sentence.")


def get_weather(city: str) -> dict[str, Any]:
    """Get the current weather in a city."""
    return {"city": city, "forecast": "sunny", "temperature_c": 21}


def book_table(restaurant: str, people: int, time: str) -> dict[str, Any]:
    """Book a table at a restaurant."""
    return {"booked": True}


def set_timer(minutes: int) -> dict[str, Any]:
    """Set a countdown timer for a number of minutes."""
    return {"timer_set": True}


def get_time(city: str) -> dict[str, Any]:
    """Get the current local time in a city."""
    return {"time": "9:30 PM"}


def convert_currency(amount: float, from_currency: str, to_currency: str) -> dict[str, Any]:
    """Convert money between currencies, like euros to dollars."""
    return {"amount": 21.7}


REGISTRY = ToolRegistry()
for _tool in (get_weather, book_table, set_timer, get_time, convert_currency):
    REGISTRY.register(_tool)

CASES: list[tuple[str, str | None, dict[str, Any]]] = [
    ("What's the weather in Paris?", "get_weather", {"city": "Paris"}),
    ("Book a table for two at Luigi's at 8pm", "book_table", {"restaurant": "Luigi's"}),
    ("Set a timer for ten minutes", "set_timer", {"minutes": 10}),
    ("What time is it in Tokyo?", "get_time", {"city": "Tokyo"}),
    ("How many dollars is 20 euros?", "convert_currency", {"amount": 20}),
    ("Tell me a joke", None, {}),
    ("What is the capital of France?", None, {}),
]


@pytest.fixture(scope="module")
def backend() -> Iterator[LlamaCppBackend]:
    model = LlamaCppBackend(LlamaCppOptions(instances=1))
    asyncio.run(model.warm(SYSTEM.content))
    yield model
    model.close()


async def _decide(backend: LlamaCppBackend, question: str) -> tuple[str | None, Any, float]:
    messages = [SYSTEM, ChatMessage("user", question)]
    start = time.perf_counter()
    decision = await decide(messages, REGISTRY.specs(), DecisionOptions(), backend)
    if decision.tool is None:
        return None, None, (time.perf_counter() - start) * 1000.0
    text = "".join([d async for d in argument_deltas(backend, decision.tool, messages, True)])
    return decision.tool.name, json.loads(text), (time.perf_counter() - start) * 1000.0


async def test_questions_call_the_right_tool_or_answer_directly(backend: LlamaCppBackend) -> None:
    await _decide(backend, "Set a timer for one minute")  # first use loads the grammar path
    print("\n[tool decision] question -> call (decision latency, warm)")
    for question, tool, expected in CASES:
        name, arguments, ms = await _decide(backend, question)
        print(f"    {ms:6.0f} ms  {question!r} -> {name} {arguments}")
        assert name == tool, question
        if tool is not None:
            spec = REGISTRY.get(tool)
            assert spec is not None
            check_arguments(spec.parameters, arguments)
            assert expected.items() <= arguments.items(), arguments


PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "pets": {"anyOf": [{"type": "array", "items": {"enum": ["cat", "dog"]}}, {"type": "null"}]},
        "address": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
    "required": ["name", "age", "pets", "address"],
}
FRUITS = {"type": "array", "items": {"type": "string"}}


@pytest.mark.parametrize(
    ("prompt", "schema"),
    [
        ("Write a very long poem about the sea.", {"type": "string", "maxLength": 5}),
        ("List twenty fruits.", {"type": "object", "properties": {"fruits": FRUITS}}),
        ("Give me a huge number.", {"type": "object", "properties": {"n": {"type": "number"}}}),
        ("Describe a person.", PERSON),
    ],
)
async def test_json_is_well_formed_by_construction(
    backend: LlamaCppBackend, prompt: str, schema: dict[str, Any]
) -> None:
    messages = [SYSTEM, ChatMessage("user", prompt)]
    value = await backend.complete_json(messages, schema)
    check_arguments(bounded_schema(schema), value)
    if schema.get("type") == "string":
        assert len(value) <= 5


async def test_a_cancelled_json_decode_frees_the_model(backend: LlamaCppBackend) -> None:
    messages = [SYSTEM, ChatMessage("user", "Describe the sea at length.")]
    schema = {"type": "object", "properties": {"text": {"type": "string", "maxLength": 200}}}

    async def read() -> None:
        async with contextlib.aclosing(backend.stream_json(messages, schema)) as parts:
            async for _ in parts:
                await asyncio.sleep(0.01)

    task = asyncio.create_task(read())
    await asyncio.sleep(0.15)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert backend.free_instances == 1
    # and the next decode runs at once
    assert await backend.complete_json(messages, {"enum": ["calm", "rough"]}) in ("calm", "rough")
