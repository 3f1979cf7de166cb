"""The conversation as the model will see it: only what was said and actually heard.

Assistant turns are committed by the turn controller with the played text only, so after
a barge-in the history never holds words the user did not hear. Tool calls are recorded
with exactly one output each: the result, or a cancellation that says what may have happened.
"""

from __future__ import annotations

import contextlib
import json
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal

from cadence.errors import InputError, LimitExceeded
from cadence.llm.base import ChatMessage, LLMBackend
from cadence.llm.context import fit_context

REPLY_RESERVE_TOKENS = 160
MAX_MESSAGES = 200  # bound memory on very long sessions; the context fit trims further


ToolStatus = Literal["pending", "completed", "failed", "cancelled"]


@dataclass
class ToolRecord:
    """One tool call as the history keeps it; `output` is None only while a client's call
    waits for its `function_call_output`."""

    call_id: str
    name: str
    arguments: str  # JSON text (partial if the call was cut while its arguments streamed)
    generation: int | None = None
    side_effects: bool = False
    client: bool = False
    ran: bool = False  # started executing (or handed to the client)
    output: str | None = None
    status: ToolStatus = "pending"
    rerun_warned: bool = False

    @property
    def visible(self) -> bool:
        """The model sees calls that did something (or may have); one cut before it ran
        changed nothing, so it stays out of the prompt (it is still recorded here)."""
        return self.output is not None and (self.ran or self.status != "cancelled")


@dataclass
class History:
    items: list[ChatMessage] = field(default_factory=list)
    dropped_for_context: int = 0
    tool_calls: OrderedDict[str, ToolRecord] = field(default_factory=OrderedDict)
    _prompt_start: ChatMessage | None = field(default=None, repr=False)  # see `fit`

    def add_user(self, text: str) -> None:
        if text.strip():
            self._append(ChatMessage("user", text.strip()))

    def add_assistant(self, text: str) -> None:
        if text.strip():
            self._append(ChatMessage("assistant", text.strip()))

    def add(self, message: ChatMessage) -> None:
        self._append(message)

    def _append(self, message: ChatMessage) -> None:
        self.items.append(message)
        for old in self.items[:-MAX_MESSAGES]:
            if old.role == "tool" and old.name:
                self.tool_calls.pop(old.name, None)  # its call leaves with its output
        del self.items[:-MAX_MESSAGES]

    # ---- tool calls ---------------------------------------------------------------------

    def add_tool_call(self, record: ToolRecord) -> None:
        """Record a call (and its output, if it has one) after the current last message."""
        if record.call_id in self.tool_calls:
            raise InputError(f"tool call {record.call_id!r} is already in the history")
        self.tool_calls[record.call_id] = record
        while len(self.tool_calls) > MAX_MESSAGES:
            self.tool_calls.popitem(last=False)
        if record.visible:
            self._append(ChatMessage("tool", record.output or "", name=record.call_id))

    def set_tool_output(self, call_id: str, output: str, status: ToolStatus = "completed") -> None:
        """A client's `function_call_output`: fills a waiting call, or replaces the
        cancellation of one closed before its output came (still exactly one output)."""
        record = self.tool_calls.get(call_id)
        if record is None or not record.client:
            raise InputError(f"no client function call {call_id[:64]!r} is waiting for output")
        if record.status not in ("pending", "cancelled"):
            raise InputError(f"function call {call_id[:64]!r} already has its output")
        record.output, record.status, record.ran = output, status, True
        for i, message in enumerate(self.items):
            if message.role == "tool" and message.name == call_id:
                self.items[i] = ChatMessage("tool", output, name=call_id)
                return
        self._append(ChatMessage("tool", output, name=call_id))

    def pending_client_calls(self) -> list[ToolRecord]:
        return [r for r in self.tool_calls.values() if r.status == "pending"]

    def interrupted_side_effect(self, name: str, arguments: Any) -> ToolRecord | None:
        """A cancelled call with side effects and these same arguments, not yet warned about."""
        for record in reversed(self.tool_calls.values()):
            if record.name != name or not (record.side_effects and record.ran):
                continue
            if record.status == "cancelled" and not record.rerun_warned:
                try:
                    same = json.loads(record.arguments) == arguments
                except ValueError:
                    same = False
                if same:
                    return record
        return None

    def tool_problems(self) -> list[str]:
        """Broken tool invariants, empty when consistent: every settled call has one output,
        the prompt holds one message per visible call, and no message without a call."""
        problems: list[str] = []
        seen: dict[str, int] = {}
        for message in self.items:
            if message.role == "tool":
                key = message.name or "?"
                seen[key] = seen.get(key, 0) + 1
                if key not in self.tool_calls:
                    problems.append(f"tool output {key} has no call")
        for call_id, record in self.tool_calls.items():
            if record.status != "pending" and record.output is None:
                problems.append(f"{call_id} ({record.status}) has no output")
            if record.status == "pending" and record.output is not None:
                problems.append(f"{call_id} is pending but has an output")
            expected = 1 if record.visible else 0
            if seen.get(call_id, 0) != expected:
                problems.append(f"{call_id} has {seen.get(call_id, 0)} outputs, not {expected}")
        return problems

    def messages(self) -> list[ChatMessage]:
        return list(self.items)

    def fit(
        self, system: ChatMessage, messages: list[ChatMessage], llm: LLMBackend
    ) -> list[ChatMessage]:
        """System prompt first, then the newest messages the window allows, from the same
        first message as last time while they fit.

        Over the window, the history is cut to half of it at once: the prompt then begins
        with the same message for the next several turns, so the model's KV cache keeps
        serving that prefix. Cutting one old turn per turn would change the prefix every
        turn and re-evaluate the whole history each time (1900 tokens: ~10 s on one core).
        """
        start = next((i for i, m in enumerate(messages) if m is self._prompt_start), 0)
        tail = messages[start:]
        window = llm.context_window
        result = fit_context(system, tail, llm.count_tokens, window, REPLY_RESERVE_TOKENS)
        if result.dropped:
            half = REPLY_RESERVE_TOKENS + (window - REPLY_RESERVE_TOKENS) // 2
            with contextlib.suppress(LimitExceeded):  # the newest message alone is bigger
                result = fit_context(system, tail, llm.count_tokens, half, REPLY_RESERVE_TOKENS)
        kept = result.messages[1:]
        self._prompt_start = kept[0] if kept else None
        self.dropped_for_context += start + result.dropped
        return list(result.messages)
