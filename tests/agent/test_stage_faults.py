"""Faults of a model stage inside the real Session: a language model that stalls or raises
mid-stream, a synthesizer that never returns or raises. Each ends in a defined way (a
holding phrase, an `error` event naming the stage, a failed `response.done`), the history
keeps what was heard, nothing is left running, and the next turn is answered as usual."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from tool_fakes import FakeLLM, FakeTTS, Harness  # type: ignore[import-not-found]

from cadence.agent import events as ev
from cadence.agent import outputs as out
from cadence.agent.turns import TurnConfig
from cadence.errors import ConfigError
from cadence.llm.base import ChatMessage, GenerationOptions

PHRASE = "One moment, let me check."  # the tool path's holding phrase, reused
ANSWER = "Paris is the capital. It is in France. It has a tower."
NEXT = "Rome is the capital of Italy."
LONG = ANSWER + " It is old." * 30  # more clauses than the clause queue holds


@dataclass
class ScriptedLLM(FakeLLM):
    """Each call takes the next script: (words to say, then "end" | "stall" | "raise")."""

    scripts: list[tuple[str, str]] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event)  # "raise" waits for it
    cancelled: int = 0  # streams stopped by a cancel while waiting on the model
    clock: Any = None  # "beat N": heartbeats every 500 ms of this clock for N ms, then words
    beats: int = 0

    async def stream(
        self, messages: Sequence[ChatMessage], options: GenerationOptions | None = None
    ) -> AsyncIterator[str]:
        self.prompts.append(list(messages))
        words, end = self.scripts.pop(0) if self.scripts else (NEXT, "end")
        try:
            if end.startswith("beat "):  # a long prompt: heartbeats (empty deltas) first
                start = last = self.clock.t
                while self.clock.t < start + float(end.split()[1]):
                    await asyncio.sleep(0)
                    if self.clock.t - last >= 500.0:
                        last = self.clock.t
                        self.beats += 1
                        yield ""
            for word in words.split():
                await asyncio.sleep(0)
                yield word + " "
            if end == "stall":
                await asyncio.Event().wait()  # never set: only a cancel ends this
            elif end == "raise":
                await self.gate.wait()  # the test opens it once audio has been played
                raise RuntimeError("connection reset by the model server")
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


class FaultyTTS(FakeTTS):
    """Synthesizes like FakeTTS, except the calls in `faults` (by index) stall or raise."""

    def __init__(self, faults: dict[int, str] | None = None) -> None:
        self.faults = faults or {}
        self.calls = 0
        self.release = threading.Event()  # a stalled call returns once the test is over
        self.stalled = threading.Event()

    def stream(self, text: str) -> Iterator[np.ndarray]:
        fault = self.faults.get(self.calls)
        self.calls += 1
        if fault == "stall":
            self.stalled.set()
            self.release.wait(timeout=30.0)
        elif fault == "raise":
            raise RuntimeError("voice model crashed")
        yield from super().stream(text)


def harness(llm: FakeLLM, tts: FaultyTTS | None = None, **turns: float) -> Harness:
    return Harness(llm, tts=tts or FaultyTTS(), turns={"stall_ms": 3000.0, **turns})


async def advance_until(h: Harness, predicate: Any, limit_ms: float) -> bool:
    """Move the simulated clock on in ticks, letting tasks and TTS threads run, until
    `predicate()`; time only moves while the session waits, as in a live call."""
    end = h.clock.t + limit_ms
    while h.clock.t < end:
        if predicate():
            return True
        await h.advance(20.0)
        await h.pump(2)
    return bool(predicate())


def texts(h: Harness, generation: int) -> list[str]:
    return [t.text for t in h.of(out.ResponseText) if t.generation == generation]


def done(h: Harness, generation: int) -> out.ResponseDone:
    return next(d for d in h.of(out.ResponseDone) if d.generation == generation)


async def answers_next_turn(h: Harness) -> None:
    """The same session answers a normal typed question after the fault."""
    before = len(h.of(out.ResponseDone))
    h.ask("And the capital of Italy?")
    assert await h.until(
        lambda: bool(h.of(out.ResponseAudio)) and len(h.of(out.ResponseDone)) > before
    )
    await h.finish()
    last = h.of(out.ResponseDone)[-1]
    assert last.status == "completed" and last.text.strip() == NEXT
    assert PHRASE not in " ".join(texts(h, last.generation)), "audio came first: no phrase"
    assert h.of(out.AssistantTurnCommitted)[-1].text == NEXT
    assert h.session.history.items[-1].content == NEXT
    assert h.session.controller.state is ev.TurnState.LISTENING


async def close_and_check_nothing_runs(h: Harness, baseline: set[asyncio.Task[Any]]) -> None:
    await h.close()
    await asyncio.sleep(0)
    left = asyncio.all_tasks() - baseline - {asyncio.current_task()}
    assert not left, f"tasks left behind: {left}"


async def test_a_model_slow_to_start_gets_one_holding_phrase_then_a_stage_timeout() -> None:
    baseline = asyncio.all_tasks()
    llm = ScriptedLLM(scripts=[("", "stall")])
    h = harness(llm, holding_phrase_ms=1500.0)
    await h.__aenter__()
    h.ask("What is the capital of France?")
    # nothing said at the v2v budget (600 ms), nor just before the holding threshold
    await h.advance(1480.0)
    await h.pump(3)
    assert not h.of(out.ResponseText)
    await h.advance(20.0)  # 1500 ms: the phrase goes to TTS (the clock waits for its audio)
    assert await h.until(lambda: bool(h.of(out.ResponseAudio)))
    assert texts(h, 1) == [PHRASE]
    # the model never says a word: the reply ends stall_ms after the phrase's progress
    assert await advance_until(h, lambda: bool(h.of(out.SessionError)), 4000.0)
    assert h.clock.t >= 1500.0 + 3000.0
    (error,) = h.of(out.SessionError)
    assert error.code == "stage_timeout" and "language model" in error.message
    await h.finish()
    reply = done(h, 1)
    assert reply.status == "failed" and reply.reason == error.message
    assert "v2v:quick_acknowledgement" in reply.latency["degraded"]
    assert texts(h, 1) == [PHRASE], "the holding phrase is said once"
    assert llm.cancelled == 1, "the stalled model stream was cancelled"
    heard = h.of(out.AssistantTurnCommitted)
    assert [c.text for c in heard] == [PHRASE]  # what the user heard, and only that
    await answers_next_turn(h)
    await close_and_check_nothing_runs(h, baseline)


async def test_a_model_evaluating_a_long_prompt_is_working_not_stalled() -> None:
    baseline = asyncio.all_tasks()
    llm = ScriptedLLM(scripts=[(ANSWER, "beat 6000")])
    h = harness(llm, holding_phrase_ms=1500.0)
    llm.clock = h.clock
    await h.__aenter__()
    h.ask("What is the capital of France?")
    # Twice stall_ms (3 s) without a word, but with a heartbeat every 500 ms: the holding
    # phrase, then the answer, and no stage_timeout.
    assert await advance_until(h, lambda: bool(h.of(out.ResponseDone)), 12000.0)
    await h.finish()
    assert h.clock.t >= 6000.0 and llm.beats >= 10
    assert not h.of(out.SessionError)
    reply = done(h, 1)
    assert reply.status == "completed"
    assert texts(h, 1)[0] == PHRASE and "Paris is the capital." in texts(h, 1)
    assert all(text.strip() for text in texts(h, 1)), "a heartbeat is never spoken or shown"
    await answers_next_turn(h)
    await close_and_check_nothing_runs(h, baseline)


async def test_a_silent_model_fails_at_the_stall_limit_with_an_error() -> None:
    baseline = asyncio.all_tasks()
    llm = ScriptedLLM(scripts=[("", "stall")])
    h = harness(llm)  # the harness turns the holding phrase off
    await h.__aenter__()
    h.ask("What is the capital of France?")
    assert await advance_until(h, lambda: bool(h.of(out.ResponseDone)), 4000.0)
    assert 3000.0 <= h.clock.t
    (error,) = h.of(out.SessionError)
    assert error.code == "stage_timeout" and "language model" in error.message
    assert done(h, 1).status == "failed", "a stall is a failure, not a silent cancel"
    assert h.session.metrics["generation_stalled"] == 1
    assert not h.of(out.ResponseAudio)
    await h.pump(3)
    assert llm.cancelled == 1
    await answers_next_turn(h)
    await close_and_check_nothing_runs(h, baseline)


@pytest.mark.parametrize("clause", [0, 1], ids=["first-clause", "second-clause"])
async def test_a_synthesizer_that_never_returns_ends_with_a_tts_stage_timeout(
    clause: int,
) -> None:
    baseline = asyncio.all_tasks()
    tts = FaultyTTS({clause: "stall"})
    h = harness(ScriptedLLM(scripts=[(LONG, "end")]), tts)
    try:
        await h.__aenter__()
        h.ask("What is the capital of France?")
        assert await h.until(lambda: tts.stalled.is_set())
        assert await advance_until(h, lambda: bool(h.of(out.SessionError)), 5000.0)
        (error,) = h.of(out.SessionError)
        assert error.code == "stage_timeout" and "speech synthesis" in error.message
        await h.finish()
        assert done(h, 1).status == "failed"
        heard = "Paris is the capital." if clause == 1 else ""
        assert texts(h, 1) == ([heard] if heard else [])
        assert [c.text for c in h.of(out.AssistantTurnCommitted)] == [heard]
        assert [m.content for m in h.session.history.items] == [
            "What is the capital of France?"
        ] + ([heard] if heard else [])
        await answers_next_turn(h)
        await close_and_check_nothing_runs(h, baseline)
    finally:
        tts.release.set()  # the worker thread cannot be killed; let it return


async def test_a_model_that_raises_mid_reply_keeps_what_was_spoken() -> None:
    baseline = asyncio.all_tasks()
    llm = ScriptedLLM(scripts=[("Paris is the capital. It is", "raise")])
    h = harness(llm)
    await h.__aenter__()
    h.ask("What is the capital of France?")
    assert await h.until(lambda: bool(h.of(out.ResponseAudio)))
    llm.gate.set()  # the first clause is out: now the model fails
    assert await h.until(lambda: bool(h.of(out.SessionError)))
    (error,) = h.of(out.SessionError)
    assert error.code == "model_error" and "language model" in error.message
    assert "connection reset" not in error.message, "backend details stay in the log"
    await h.finish()
    reply = done(h, 1)
    assert reply.status == "failed" and reply.reason == error.message
    assert texts(h, 1) == ["Paris is the capital."]  # the unfinished clause is not spoken
    (heard,) = h.of(out.AssistantTurnCommitted)
    assert heard.text == "Paris is the capital."
    assert h.session.history.items[-1].content == "Paris is the capital."
    await answers_next_turn(h)
    await close_and_check_nothing_runs(h, baseline)


async def test_a_synthesizer_that_raises_ends_the_reply_at_once() -> None:
    baseline = asyncio.all_tasks()
    h = harness(ScriptedLLM(scripts=[(ANSWER, "end")]), FaultyTTS({0: "raise"}))
    await h.__aenter__()
    h.ask("What is the capital of France?")
    assert await h.until(lambda: bool(h.of(out.ResponseDone)))
    (error,) = h.of(out.SessionError)
    assert error.code == "model_error" and "speech synthesis" in error.message
    assert done(h, 1).status == "failed"
    # nothing was heard and nothing is left to play: listening again on the next tick,
    # not after the stall limit
    await h.advance(40.0)
    assert h.session.controller.state is ev.TurnState.LISTENING
    assert [c.text for c in h.of(out.AssistantTurnCommitted)] == [""]
    assert [m.role for m in h.session.history.items] == ["user"]
    await answers_next_turn(h)
    await close_and_check_nothing_runs(h, baseline)


def test_holding_phrase_threshold_is_a_turn_setting() -> None:
    assert TurnConfig().holding_phrase_ms == 1500.0
    assert (
        TurnConfig.from_dict({"holding_phrase_ms": 900, "stall_ms": 4000}).holding_phrase_ms == 900
    )
    with pytest.raises(ConfigError, match="holding_phrase_ms"):
        TurnConfig(holding_phrase_ms=0)
