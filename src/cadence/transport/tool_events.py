"""The Realtime wire for tools: `session.update` tools/tool_choice → tool specs, and a
session's tool outputs → `function_call` items and argument events, as OpenAI sends them.

Sans-I/O and free of other transport imports at run time (no cycles): `RealtimeProtocol`
owns one `ToolEvents` and passes each `ToolCall*` output through it (docs/tools.md).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cadence.agent import outputs as out
from cadence.agent.tool_decision import ToolChoice
from cadence.agent.tools import ToolSpec
from cadence.errors import CadenceError, InputError

if TYPE_CHECKING:
    from cadence.transport.replies import Conversation, EventIds

Event = dict[str, Any]
MAX_TRACKED_CALLS = 256  # calls whose items are remembered (a client may never answer)


@dataclass(frozen=True)
class SetTools:
    """Command for the session: the client's tools (it runs them) and the tool choice."""

    tools: tuple[ToolSpec, ...]
    choice: ToolChoice


def parse_tools(tools: Any) -> list[ToolSpec]:
    """Realtime `session.tools` → client tool specs; `InputError` says what is wrong."""
    if not isinstance(tools, list):
        raise InputError("session.tools must be a list of function tools")
    specs: list[ToolSpec] = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, Mapping) or tool.get("type", "function") != "function":
            raise InputError(f"tools[{i}] must be a {{'type': 'function', 'name': ...}} tool")
        name, params = tool.get("name"), tool.get("parameters") or {"type": "object"}
        description = tool.get("description") or ""
        if not isinstance(name, str) or not isinstance(params, Mapping):
            raise InputError(f"tools[{i}] needs a string name and an object of parameters")
        if not isinstance(description, str):
            raise InputError(f"tools[{i}].description must be a string")
        try:
            specs.append(ToolSpec(name, description, dict(params), client=True))
        except CadenceError as exc:
            raise InputError(f"tools[{i}]: {exc.message}") from None
    if len({s.name for s in specs}) != len(specs):
        raise InputError("session.tools has two tools with the same name")
    return specs


def parse_tool_choice(value: Any, specs: list[ToolSpec]) -> ToolChoice:
    """`auto`, `none`, `required` or `{"type": "function", "name": ...}` of a declared tool."""
    choice = ToolChoice.parse("auto" if value is None else value)
    if choice.mode == "named" and choice.name not in {s.name for s in specs}:
        raise InputError(f"tool_choice names {choice.name!r}, which session.tools lacks")
    return choice


def set_tools_command(session: Mapping[str, Any]) -> SetTools:
    """The command for a `session.update` that touched `tools` or `tool_choice`, from the
    updated session object (validated whole, so a bad update changes nothing)."""
    specs = parse_tools(session.get("tools", []))
    return SetTools(tuple(specs), parse_tool_choice(session.get("tool_choice"), specs))


@dataclass
class _CallItem:
    item_id: str
    call_id: str
    name: str
    generation: int
    response_id: str | None
    output_index: int
    arguments: str = ""
    status: str = "in_progress"  # completed: arguments done; incomplete: cut before that


@dataclass
class ToolEvents:
    """Per connection: function_call items of each response and their outputs."""

    ids: EventIds
    items: Conversation
    _calls: OrderedDict[str, _CallItem] = field(default_factory=OrderedDict)
    _next_index: dict[int, int] = field(default_factory=dict)  # generation → output index

    def on_output(self, item: out.SessionOutput, response_id: str | None) -> list[Event]:
        """Events for a `ToolCallStarted/Arguments/Finished` (others give none)."""
        match item:
            case out.ToolCallStarted():
                return self._started(item, response_id)
            case out.ToolCallArguments():
                return self._arguments(item)
            case out.ToolCallFinished():
                return self._finished(item)
            case _:
                return []

    def response_output(self, generation: int) -> list[dict[str, Any]]:
        """The response's function_call items, for `response.done`'s `output`."""
        self._next_index.pop(generation, None)
        return [
            self._item(call, "incomplete" if call.status == "in_progress" else call.status)
            for call in self._calls.values()
            if call.generation == generation
        ]

    def complete_response_done(self, events: list[Event], generation: int) -> list[Event]:
        """Add the response's function calls to the `response.done` among `events`."""
        calls = self.response_output(generation)
        for event in events:
            if event.get("type") == "response.done" and calls:
                event["response"]["output"] = [*event["response"].get("output", []), *calls]
        return events

    def _item(self, call: _CallItem, status: str) -> dict[str, Any]:
        return {
            "id": call.item_id,
            "object": "realtime.item",
            "type": "function_call",
            "status": status,
            "call_id": call.call_id,
            "name": call.name,
            "arguments": call.arguments,
        }

    def _ids(self, call: _CallItem) -> dict[str, Any]:
        return {
            "response_id": call.response_id,
            "item_id": call.item_id,
            "output_index": call.output_index,
            "call_id": call.call_id,
        }

    def _started(self, item: out.ToolCallStarted, response_id: str | None) -> list[Event]:
        # Index 0 is the assistant message the reply opened with; calls follow it.
        index = self._next_index.get(item.generation, 1)
        self._next_index[item.generation] = index + 1
        call = _CallItem(
            self.ids.new("item"), item.call_id, item.name, item.generation, response_id, index
        )
        self._calls[item.call_id] = call
        while len(self._calls) > MAX_TRACKED_CALLS:
            self._calls.popitem(last=False)
        self.items.remember(call.item_id, _record("assistant"))
        fields = self._item(call, "in_progress")
        previous, self.items.last_item_id = self.items.last_item_id, call.item_id
        events: list[Event] = []
        if response_id is not None:
            events.append(
                self.ids.event(
                    "response.output_item.added",
                    response_id=response_id,
                    output_index=index,
                    item=fields,
                )
            )
        events.append(
            self.ids.event("conversation.item.added", previous_item_id=previous, item=fields)
        )
        return events

    def _arguments(self, item: out.ToolCallArguments) -> list[Event]:
        call = self._calls.get(item.call_id)
        if call is None or call.status != "in_progress":
            return []
        if not item.done:
            call.arguments += item.delta
            if call.response_id is None or not item.delta:
                return []
            delta = self.ids.event(
                "response.function_call_arguments.delta", **self._ids(call), delta=item.delta
            )
            return [delta]
        call.arguments, call.status = item.arguments, "completed"
        return [
            *(
                [
                    self.ids.event(
                        "response.function_call_arguments.done",
                        **self._ids(call),
                        name=call.name,
                        arguments=call.arguments,
                    )
                ]
                if call.response_id is not None
                else []
            ),
            *self._item_done(call, "completed"),
        ]

    def _item_done(self, call: _CallItem, status: str) -> list[Event]:
        done = self._item(call, status)
        events: list[Event] = []
        if call.response_id is not None:
            events.append(
                self.ids.event(
                    "response.output_item.done",
                    response_id=call.response_id,
                    output_index=call.output_index,
                    item=done,
                )
            )
        events.append(self.ids.event("conversation.item.done", previous_item_id=None, item=done))
        return events

    def _finished(self, item: out.ToolCallFinished) -> list[Event]:
        call = self._calls.get(item.call_id)
        events: list[Event] = []
        if call is not None and call.status == "in_progress":  # cut while arguments streamed
            call.status = "incomplete"
            events += self._item_done(call, "incomplete")
        if item.client and item.status != "cancelled":
            return events  # the client created this output item itself
        output = {
            "id": self.ids.new("item"),
            "object": "realtime.item",
            "type": "function_call_output",
            "status": "completed",
            "call_id": item.call_id,
            "output": item.output,
        }
        self.items.remember(output["id"], _record("tool"))
        return [*events, *self.items.added(output)]


def _record(role: str) -> Any:
    from cadence.transport.replies import ItemRecord  # at run time only: no import cycle

    return ItemRecord(role)
