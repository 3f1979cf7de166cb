"""The Realtime wire for tools: session.update tools → specs, and tool outputs → the
function_call events, each checked against the `openai` SDK's own server event types."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.types.realtime import RealtimeServerEvent
from pydantic import TypeAdapter

from cadence.agent import outputs as out
from cadence.agent.tool_decision import ToolChoice
from cadence.errors import InputError
from cadence.transport.replies import Conversation, EventIds
from cadence.transport.tool_events import ToolEvents, parse_tools, set_tools_command

SDK_EVENT = TypeAdapter(RealtimeServerEvent)
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def sdk(event: dict[str, Any]) -> Any:
    """The event as the openai SDK parses it (fails on any missing or mistyped field)."""
    parsed = SDK_EVENT.validate_python(event)
    assert parsed.type == event["type"]
    return parsed


def test_session_tools_become_client_specs() -> None:
    command = set_tools_command({"tools": [WEATHER], "tool_choice": "required"})
    (spec,) = command.tools
    assert spec.client and spec.name == "get_weather" and spec.parameters["properties"]
    assert command.choice == ToolChoice("required")
    named = set_tools_command(
        {"tools": [WEATHER], "tool_choice": {"type": "function", "name": "get_weather"}}
    )
    assert named.choice == ToolChoice("named", "get_weather")
    assert spec.to_realtime() == WEATHER


@pytest.mark.parametrize(
    "session",
    [
        {"tools": "get_weather"},
        {"tools": [{"type": "mcp", "server_label": "x"}]},
        {"tools": [{"type": "function", "name": "bad name!"}]},
        {"tools": [{"type": "function", "name": "f", "parameters": {"type": "array"}}]},
        {"tools": [WEATHER, WEATHER]},
        {"tools": [WEATHER], "tool_choice": {"type": "function", "name": "nope"}},
        {"tools": [WEATHER], "tool_choice": "sometimes"},
    ],
)
def test_bad_tools_are_input_errors(session: dict[str, Any]) -> None:
    with pytest.raises(InputError):
        set_tools_command(session)


def test_no_tools_is_valid() -> None:
    assert parse_tools([]) == [] and set_tools_command({}).choice == ToolChoice("auto")


def _events() -> tuple[ToolEvents, Conversation]:
    ids = EventIds()
    items = Conversation(ids, max_items=100)
    return ToolEvents(ids, items), items


def test_a_server_tool_call_maps_to_the_realtime_sequence() -> None:
    tools, items = _events()
    events = tools.on_output(out.ToolCallStarted(3, "call_1", "get_weather"), "resp_1")
    events += tools.on_output(out.ToolCallArguments(3, "call_1", '{"city": '), "resp_1")
    events += tools.on_output(out.ToolCallArguments(3, "call_1", '"Paris"}'), "resp_1")
    whole = '{"city": "Paris"}'
    events += tools.on_output(out.ToolCallArguments(3, "call_1", "", True, whole), "resp_1")
    result = '{"forecast": "sunny"}'
    finished = out.ToolCallFinished(3, "call_1", "get_weather", result, "completed")
    events += tools.on_output(finished, "resp_1")
    parsed = [sdk(e) for e in events]
    assert [e.type for e in parsed] == [
        "response.output_item.added",
        "conversation.item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "conversation.item.done",
        "conversation.item.added",
        "conversation.item.done",
    ]
    added, done = parsed[0], parsed[5]
    assert added.item.type == "function_call" and added.item.status == "in_progress"
    assert added.output_index == 1  # the reply's message item is 0
    assert "".join(e.delta for e in parsed[2:4]) == whole
    assert parsed[4].arguments == whole and parsed[4].name == "get_weather"
    assert done.item.status == "completed" and done.item.arguments == whole
    output = parsed[-1].item
    assert output.type == "function_call_output" and output.call_id == "call_1"
    assert json.loads(output.output) == {"forecast": "sunny"}
    assert items.last_item_id == output.id
    # response.done lists the call among its outputs
    response_done = {"type": "response.done", "response": {"output": [{"type": "message"}]}}
    tools.complete_response_done([response_done], 3)
    assert response_done["response"]["output"][1]["call_id"] == "call_1"


def test_a_call_cut_while_its_arguments_stream_is_incomplete() -> None:
    tools, _ = _events()
    tools.on_output(out.ToolCallStarted(1, "call_2", "book_table"), "resp_2")
    tools.on_output(out.ToolCallArguments(1, "call_2", '{"ci'), "resp_2")
    cancelled = out.ToolCallFinished(
        1, "call_2", "book_table", '{"cancelled": true}', "cancelled", ran=False
    )
    parsed = [sdk(e) for e in tools.on_output(cancelled, "resp_2")]
    assert [e.type for e in parsed[:2]] == ["response.output_item.done", "conversation.item.done"]
    assert parsed[0].item.status == "incomplete"
    assert parsed[-1].item.type == "function_call_output"  # the recorded cancellation
    assert tools.response_output(1)[0]["status"] == "incomplete"


def test_a_client_call_gets_no_server_output_item_unless_cancelled() -> None:
    tools, _ = _events()
    tools.on_output(out.ToolCallStarted(1, "call_3", "get_weather", client=True), "resp_3")
    done = out.ToolCallArguments(1, "call_3", "", True, "{}")
    first = tools.on_output(done, "resp_3")[0]
    assert first["type"] == "response.function_call_arguments.done"
    answered = out.ToolCallFinished(1, "call_3", "get_weather", "{}", "completed", client=True)
    assert tools.on_output(answered, None) == []  # the client created that item itself
    closed = out.ToolCallFinished(1, "call_3", "get_weather", "{}", "cancelled", client=True)
    assert [sdk(e).type for e in tools.on_output(closed, None)] == [
        "conversation.item.added",
        "conversation.item.done",
    ]


def test_outputs_of_other_kinds_and_unknown_calls_give_no_events() -> None:
    tools, _ = _events()
    assert tools.on_output(out.ResponseStarted(1), "resp") == []
    assert tools.on_output(out.ToolCallArguments(1, "nope", "x"), "resp") == []
