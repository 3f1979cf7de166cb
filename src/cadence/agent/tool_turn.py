"""A reply that may call a tool: decide, stream the arguments, run it (a holding phrase if
it is slow), answer from its result, and settle every call exactly once (docs/tools.md).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Literal

from cadence.agent import outputs as out
from cadence.agent.budgets import Degrade, LatencyRecord
from cadence.agent.generation import Generation, Speech, Writer
from cadence.agent.history import History, ToolRecord, ToolStatus
from cadence.agent.tool_decision import (
    Decision,
    DecisionOptions,
    JsonDecoder,
    ToolChoice,
    argument_deltas,
    decide,
)
from cadence.agent.tools import ToolRegistry, ToolResult, ToolSpec, to_output
from cadence.errors import CadenceError
from cadence.llm.base import ChatMessage, LLMBackend

Phase = Literal["arguments", "running", "awaiting_client", "done"]


@dataclass
class ToolCall:
    """A call in flight inside one generation."""

    call_id: str
    spec: ToolSpec
    generation: int
    arguments: str = ""
    phase: Phase = "arguments"
    ran: bool = False  # the tool was started (or handed to the client): it may have acted
    started_ms: float | None = None
    output: str | None = None
    status: ToolStatus = "pending"
    task: asyncio.Task[ToolResult] | None = None
    recorded: bool = False  # settled into the history


def cancellation(call: ToolCall, reason: str) -> str:
    """The output a call gets when its turn ends before its result: says what may be true."""
    body: dict[str, Any] = {"cancelled": True, "reason": reason, "tool": call.spec.name}
    if not call.ran:
        body["ran"] = False
    elif call.spec.side_effects:
        body["may_have_completed"] = True
        body["note"] = "it was interrupted while running and may have gone through"
    else:
        body["note"] = "it was interrupted before it returned a result"
    return to_output(body)


class ToolTurns:
    """The session's tools: the decision for each reply, the calls, and their settlement.

    `writer` plugs into `run_generation`; the session calls `settle` when the turn
    controller commits or cancels a reply, so a barge-in at any phase leaves one output per
    call: the result, or a cancellation saying whether the tool may have acted. A
    speculative reply may decide, but it acts only once it becomes the answer."""

    def __init__(
        self,
        registry: ToolRegistry,
        options: DecisionOptions,
        llm: LLMBackend,
        *,
        history: History,
        now_ms: Callable[[], float],
        emit: Callable[[out.SessionOutput], None],
        records: Mapping[int, LatencyRecord],
        budget_ms: float,
    ) -> None:
        self.registry = registry
        self.options = options
        self.llm = llm
        self.history = history
        self._now_ms = now_ms
        self._emit = emit
        self._records = records
        self.budget_ms = budget_ms
        self._open: dict[str, ToolCall] = {}  # call id → call not yet settled
        self.decisions: list[tuple[int, str]] = []  # (generation, reason): why it (not) called

    # ---- configuration -------------------------------------------------------------------

    def set_client_tools(self, specs: Iterable[ToolSpec], choice: Any = None) -> None:
        """A Realtime client's `tools` (replacing its earlier ones) and `tool_choice`."""
        self.registry.set_client_tools(specs)
        if choice is not None:
            self.options = replace(self.options, choice=ToolChoice.parse(choice))

    def writer(self, gen: Generation, messages: Sequence[ChatMessage]) -> Writer | None:
        """The writer for a reply, or None when no tool can apply (the plain path)."""
        if not len(self.registry) or self.options.choice.mode == "none":
            return None
        return partial(self._write, gen, list(messages))

    # ---- one reply -------------------------------------------------------------------------

    async def _write(self, gen: Generation, messages: list[ChatMessage], speech: Speech) -> None:
        try:
            decision = await decide(messages, self.registry.specs(), self.options, self.llm)
        except CadenceError as exc:  # e.g. a client schema the grammar cannot follow
            self._emit(out.SessionError(exc.code, f"tool decision failed: {exc.message}"))
            decision = Decision(None, "decision_failed")
        self.decisions.append((gen.generation, decision.reason))
        del self.decisions[:-64]
        if decision.tool is None:
            await speech.stream(self.llm.stream(messages))
            return
        call = await self._arguments(gen, decision.tool, messages)
        if call is None:  # the arguments could not be decoded: answer without the tool
            await speech.stream(self.llm.stream(messages))
            return
        if call.spec.client:
            call.phase, call.ran = "awaiting_client", True  # the reply ends; the client runs it
            return
        result = await self._execute(gen, call, json.loads(call.arguments), speech)
        self._finish(call, result)
        answer = ChatMessage("tool", call.output or "", name=call.call_id)
        # Re-fit: the tool output may be long, and the newest message always stays.
        prompt = self.history.fit(messages[0], [*messages[1:], answer], self.llm)
        await speech.stream(self.llm.stream(prompt))

    async def _arguments(
        self, gen: Generation, spec: ToolSpec, messages: list[ChatMessage]
    ) -> ToolCall | None:
        """Decode the call's arguments; they stream out live once the reply is the answer
        (a speculative one decodes into a buffer and announces the call on promotion)."""
        held: list[str] = []
        call: ToolCall | None = None
        assert isinstance(self.llm, JsonDecoder)  # decide() answered directly otherwise
        try:
            ground = self.options.ground_strings
            async for delta in argument_deltas(self.llm, spec, messages, ground):
                held.append(delta)
                if gen.responding.is_set():
                    call = call or self._start(gen, spec)
                    held = self._send(call, held)
        except CadenceError as exc:
            self._emit(out.SessionError(exc.code, f"tool arguments failed: {exc.message}"))
            if call is not None:
                self._settle_call(call, "arguments_failed")
            return None
        await gen.responding.wait()
        call = call or self._start(gen, spec)
        self._send(call, held)
        self._emit(out.ToolCallArguments(gen.generation, call.call_id, "", True, call.arguments))
        return call

    def _start(self, gen: Generation, spec: ToolSpec) -> ToolCall:
        call = ToolCall(f"call_{secrets.token_hex(8)}", spec, gen.generation)
        gen.calls.append(call)
        self._open[call.call_id] = call
        self._emit(out.ToolCallStarted(gen.generation, call.call_id, spec.name, spec.client))
        return call

    def _send(self, call: ToolCall, held: list[str]) -> list[str]:
        for delta in held:
            call.arguments += delta
            self._emit(out.ToolCallArguments(call.generation, call.call_id, delta))
        return []

    async def _execute(
        self, gen: Generation, call: ToolCall, arguments: Any, speech: Speech
    ) -> ToolResult:
        """Run the tool; past the tool budget, speak the holding phrase while it works."""
        earlier = self.history.interrupted_side_effect(call.spec.name, arguments)
        if earlier is not None:
            # Never re-run silently what may already have happened: ask first, once.
            earlier.rerun_warned = True
            body = {
                "not_run": True,
                "reason": f"the same {call.spec.name} call was interrupted earlier and may "
                "have gone through; ask the user to confirm before doing it again",
            }
            return ToolResult(to_output(body), "failed", 0.0)
        call.phase, call.ran, call.started_ms = "running", True, self._now_ms()
        call.task = asyncio.create_task(
            self.registry.call(call.spec.name, arguments), name=f"tool-{call.call_id}"
        )
        try:
            done, _ = await asyncio.wait({call.task}, timeout=self.budget_ms / 1000.0)
            if not done:
                record = self._records.get(gen.generation)
                if record is not None:
                    record.breach("tool", f"tool > {self.budget_ms:.0f}ms")
                if not speech.held:  # a slow start may have had it said already (stalls.py)
                    if record is not None:
                        record.degrade("tool", Degrade.HOLDING_PHRASE)
                    await speech.say(self.options.holding_phrase)
            return await call.task
        except asyncio.CancelledError:
            call.task.cancel()  # an async tool stops; a thread runs on, its result dropped
            raise

    def _finish(self, call: ToolCall, result: ToolResult) -> None:
        call.phase, call.output, call.status = "done", result.output, result.status
        record = self._records.get(call.generation)
        if record is not None and call.started_ms is not None:
            record.mark("tool", self._now_ms(), since_ms=call.started_ms)
        self._emit(
            out.ToolCallFinished(
                call.generation, call.call_id, call.spec.name, result.output, result.status
            )
        )

    # ---- settlement ------------------------------------------------------------------------

    def settle(self, gen: Generation, reason: str) -> None:
        """The controller committed or cancelled `gen`: record each of its calls once."""
        for call in gen.calls:
            if not call.recorded:
                self._settle_call(call, reason)

    def _settle_call(self, call: ToolCall, reason: str) -> None:
        task = call.task
        if call.phase == "running" and task is not None and task.done() and not task.cancelled():
            self._finish(call, task.result())  # it finished just before the turn ended
        ran = call.ran
        if call.phase in ("arguments", "running"):
            call.output, call.status = cancellation(call, reason), "cancelled"
            self._emit(
                out.ToolCallFinished(
                    call.generation,
                    call.call_id,
                    call.spec.name,
                    call.output,
                    "cancelled",
                    ran=ran,
                    client=call.spec.client,
                    side_effects_uncertain=ran and call.spec.side_effects,
                )
            )
        waiting = call.phase == "awaiting_client"
        self.history.add_tool_call(
            ToolRecord(
                call.call_id,
                call.spec.name,
                call.arguments,
                call.generation,
                side_effects=call.spec.side_effects,
                client=call.spec.client,
                ran=ran,
                output=None if waiting else call.output,
                status="pending" if waiting else call.status,
            )
        )
        call.recorded = True
        self._open.pop(call.call_id, None)

    def add_function_output(self, call_id: str, output: str) -> None:
        """A client's `function_call_output` for one of its calls."""
        call = self._open.get(call_id)
        if call is not None and call.phase == "awaiting_client":
            call.phase, call.output, call.status = "done", output, "completed"
            generation, name = call.generation, call.spec.name
        else:
            self.history.set_tool_output(call_id, output)  # raises for unknown/answered calls
            record = self.history.tool_calls[call_id]
            generation, name = record.generation or 0, record.name
        self._emit(
            out.ToolCallFinished(generation, call_id, name, output, "completed", client=True)
        )

    def close_pending_client_calls(
        self, reason: str = "no output before the next user turn"
    ) -> None:
        """The user moved on: a client call still without output gets a cancellation (a late
        output replaces it, keeping one output per call)."""
        for record in self.history.pending_client_calls():
            body = to_output({"cancelled": True, "reason": reason, "tool": record.name})
            self.history.set_tool_output(record.call_id, body, "cancelled")
            self._emit(
                out.ToolCallFinished(
                    record.generation or 0,
                    record.call_id,
                    record.name,
                    body,
                    "cancelled",
                    client=True,
                )
            )
