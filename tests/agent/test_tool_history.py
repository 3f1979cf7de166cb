"""Barge-in at every phase of a tool call leaves a consistent history: one output per call
(the result or a recorded cancellation), only heard words recorded as said, and a tool
with side effects cut mid-way reported as "may have gone through", never re-run silently."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tool_fakes import FakeLLM, Gate, Harness, weather_registry  # type: ignore[import-not-found]

from cadence.agent import outputs as out
from cadence.agent.tools import ToolSpec

QUESTION = "What's the weather in Paris?"
PHASES = ["arguments", "running", "holding", "answer", "after"]
INTERRUPTIONS = ["voice", "cancel", "typed"]


def _words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]", " ", text.lower()).split()


def check_invariants(h: Harness, *, server_calls_finish_once: bool = True) -> None:
    history = h.session.history
    assert history.tool_problems() == []
    started = [s.call_id for s in h.of(out.ToolCallStarted)]
    for call_id in started:
        record = history.tool_calls[call_id]  # every announced call is recorded
        assert record.output is not None or (record.client and record.status == "pending")
    finished: dict[str, int] = {}
    for f in h.of(out.ToolCallFinished):
        finished[f.call_id] = finished.get(f.call_id, 0) + 1
    for s in h.of(out.ToolCallStarted):
        if not s.client and server_calls_finish_once:
            assert finished.get(s.call_id) == 1, f"{s.call_id} finished {finished.get(s.call_id)}x"
    # Said means heard: each assistant message is the committed (played) prefix of its reply.
    generated = {d.generation: d.text for d in h.of(out.ResponseDone)}
    commits = [c for c in h.of(out.AssistantTurnCommitted) if c.text]
    said = [m.content for m in history.items if m.role == "assistant"]
    assert said == [c.text for c in commits]
    for commit in commits:
        full = _words(generated.get(commit.generation, commit.text))
        assert full[: len(_words(commit.text))] == _words(commit.text)


async def _interrupt(h: Harness, how: str) -> None:
    if how == "voice":
        h.speak("Stop, tell me a joke instead.")
    elif how == "cancel":
        h.session.cancel_response()
    else:
        h.ask("Never mind, tell me a joke.")
    await h.pump()


async def _reach(h: Harness, phase: str, gate: Gate) -> None:
    if phase == "arguments":
        assert await h.until(lambda: len(h.of(out.ToolCallArguments)) >= 3)
        assert not any(a.done for a in h.of(out.ToolCallArguments))
    elif phase == "running":
        assert await h.until(lambda: any(a.done for a in h.of(out.ToolCallArguments)))
        await h.pump()
    elif phase == "holding":
        assert await h.until(lambda: bool(h.of(out.ResponseAudio)))
        await h.advance(250.0)  # part of "One moment, let me check." has played
    elif phase == "answer":
        gate.opened.set()
        assert await h.until(lambda: any("sunny" in t.text for t in h.of(out.ResponseText)))
        await h.advance(450.0)
    else:
        gate.opened.set()
        await h.finish()


@pytest.mark.parametrize("how", INTERRUPTIONS)
@pytest.mark.parametrize("phase", PHASES)
async def test_interruption_at_each_phase_keeps_the_history_consistent(
    phase: str, how: str
) -> None:
    gate = Gate()
    budget = 30.0 if phase == "holding" else 60_000.0
    llm = FakeLLM(step_s=0.004)
    async with Harness(llm, weather_registry(gate), tool_budget_ms=budget) as h:
        h.ask(QUESTION)
        await _reach(h, phase, gate)
        await _interrupt(h, how)
        gate.opened.set()
        await h.finish()
        record = next(iter(h.session.history.tool_calls.values()))
        outcome = json.loads(record.output or "{}")
        if phase == "arguments":
            assert record.status == "cancelled" and not record.ran and not record.visible
            assert outcome["ran"] is False  # nothing happened, so the prompt never shows it
        elif phase in ("running", "holding"):
            assert record.status == "cancelled" and record.ran and record.visible
            assert outcome["cancelled"] is True and "may_have_completed" not in outcome
        else:
            assert record.status == "completed" and outcome["forecast"] == "sunny"
        if phase in ("holding", "answer"):
            heard = h.of(out.AssistantTurnCommitted)[0]
            assert heard.interrupted and 0 < len(_words(heard.text)) < 12
        check_invariants(h)


async def test_a_cut_side_effect_is_reported_and_never_rerun_silently() -> None:
    gate = Gate(result={"booked": True})
    async with Harness(FakeLLM(step_s=0.002), weather_registry(gate, side_effects=True)) as h:
        h.ask("Book the weather table in Paris.")
        assert await h.until(lambda: gate.runs == 1)
        h.speak("Wait, stop.")
        await h.pump()
        finished = h.of(out.ToolCallFinished)[0]
        assert finished.status == "cancelled" and finished.side_effects_uncertain
        assert json.loads(finished.output)["may_have_completed"] is True
        gate.opened.set()
        await h.finish()
        # Asked again with the same arguments: the runtime answers for the tool instead.
        h.ask("Book the weather table in Paris.")
        await h.finish()
        assert gate.runs == 1
        second = h.of(out.ToolCallFinished)[-1]
        assert json.loads(second.output)["not_run"] is True
        # The user confirmed: a third identical request runs.
        h.ask("Yes, book the weather table in Paris again.")
        await h.finish()
        assert gate.runs == 2
        check_invariants(h)
        prompt = "\n".join(m.content for m in h.session.history.items if m.role == "tool")
        assert "may have gone through" in prompt


async def test_a_reply_dropped_because_the_user_went_on_settles_its_call() -> None:
    gate = Gate()
    async with Harness(FakeLLM(), weather_registry(gate)) as h:
        h.speak(QUESTION)
        await h.advance(1500.0)  # silence: the turn ends and the reply calls the tool
        assert await h.until(lambda: gate.runs == 1)
        h.speak("and in London?")  # nothing was heard yet: the user just went on
        await h.pump()
        record = next(iter(h.session.history.tool_calls.values()))
        assert record.status == "cancelled" and json.loads(record.output or "")["reason"] == (
            "user_resumed"
        )
        gate.opened.set()
        await h.finish()
        check_invariants(h)


async def test_a_client_call_left_without_output_is_closed_by_the_next_turn() -> None:
    async with Harness(FakeLLM()) as h:
        h.session.set_tools([ToolSpec("get_weather", "Get the weather.")])
        h.ask(QUESTION)
        await h.finish()
        call_id = h.of(out.ToolCallStarted)[0].call_id
        h.speak("Hello, are you there?")  # the user moves on before the client answers
        await h.finish()
        record = h.session.history.tool_calls[call_id]
        assert record.status == "cancelled"
        roles = [m.role for m in h.session.history.items]
        assert roles[:3] == ["user", "tool", "user"]
        h.session.add_function_output(call_id, '{"forecast": "rain"}')  # late: replaces it
        assert h.session.history.tool_calls[call_id].status == "completed"
        check_invariants(h)


# ---- random interleavings ------------------------------------------------------------------

STEP = st.one_of(
    st.tuples(st.just("ask"), st.sampled_from([QUESTION, "Tell me a joke."])),
    st.tuples(st.just("speak"), st.sampled_from([QUESTION, "Stop, something else."])),
    st.tuples(st.just("cancel"), st.none()),
    st.tuples(st.just("respond"), st.none()),
    st.tuples(st.just("open"), st.none()),
    st.tuples(st.just("advance"), st.sampled_from([20.0, 150.0, 700.0])),
    st.tuples(st.just("output"), st.none()),
    st.tuples(st.just("wait"), st.sampled_from([0.01, 0.04])),  # real time: tools, TTS run
)


async def _scenario(
    steps: list[tuple[str, Any]], client: bool, effects: bool, slow: bool, step_s: float
) -> None:
    gate = Gate()
    registry = None if client else weather_registry(gate, side_effects=effects)
    budget = 5.0 if slow else 60_000.0
    async with Harness(FakeLLM(step_s=step_s), registry, tool_budget_ms=budget) as h:
        if client:
            h.session.set_tools([ToolSpec("get_weather", "Get the weather.")])
        h.ask(QUESTION)  # every run has a call in flight when the random steps begin
        await h.pump(3)
        for kind, arg in steps:
            if kind == "ask":
                h.ask(arg)
            elif kind == "speak":
                h.speak(arg)
            elif kind == "cancel":
                h.session.cancel_response()
            elif kind == "respond":
                h.session.request_response()
            elif kind == "open":
                gate.opened.set()
            elif kind == "advance":
                await h.advance(arg)
            elif kind == "wait":
                await asyncio.sleep(arg)
            elif kind == "output" and (calls := h.of(out.ToolCallStarted)):
                try:
                    h.session.add_function_output(calls[-1].call_id, '{"forecast": "rain"}')
                except Exception:
                    pass  # already answered, or not yet recorded: refused, like the wire does
            await h.pump(2)
        gate.opened.set()
        await h.finish()
        check_invariants(h)  # at rest: before close() settles anything still open
        await h.close()
        check_invariants(h)


@settings(
    max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    steps=st.lists(STEP, min_size=1, max_size=8),
    client=st.booleans(),
    effects=st.booleans(),
    slow=st.booleans(),
    step_s=st.sampled_from([0.0, 0.002]),
)
def test_random_interleavings_of_tool_events_and_barge_ins(
    steps: list[tuple[str, Any]], client: bool, effects: bool, slow: bool, step_s: float
) -> None:
    asyncio.run(_scenario(steps, client, effects, slow, step_s))
