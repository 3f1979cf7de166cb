"""Fakes for tool tests: a scripted LLM that also decodes JSON, instant TTS and ASR, a
clock the test moves, and a harness that drives a Session through typed turns, voice
barge-ins and playback without any real model."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cadence.agent import events as ev
from cadence.agent import outputs as out
from cadence.agent.runtime import Runtime
from cadence.agent.session import Session, SessionOptions
from cadence.agent.tools import ToolRegistry
from cadence.audio.asr import AsrResult
from cadence.config import Profile
from cadence.llm.base import ChatMessage, GenerationOptions

TTS_RATE = 16_000
WORD_MS = 100.0  # every spoken word lasts this long


class FakeTTS:
    sample_rate = TTS_RATE

    def stream(self, text: str) -> Any:
        for _ in text.split():
            yield np.full(int(TTS_RATE * WORD_MS / 1000), 0.01, np.float32)

    def warm(self) -> None:
        return None


class FakeASR:
    def transcribe(self, audio: np.ndarray) -> AsrResult:
        return AsrResult("", 1.0, 0.0, len(audio) / 16_000)

    def warm(self) -> None:
        return None


@dataclass
class FakeLLM:
    """Answers with `reply` word by word; decodes calls as a grammar would: stage one picks
    the first allowed tool name, stage two writes `arguments` one character at a time."""

    reply: str = "It is sunny in Paris today."
    arguments: str = '{"city": "Paris"}'
    step_s: float = 0.0  # pause per delta: lets a test interrupt mid-stream
    name: str = "fake"
    context_window: int = 4096
    prompts: list[list[ChatMessage]] = field(default_factory=list)
    json_prompts: list[tuple[str, Mapping[str, Any]]] = field(default_factory=list)

    async def stream(
        self, messages: Sequence[ChatMessage], options: GenerationOptions | None = None
    ) -> AsyncIterator[str]:
        self.prompts.append(list(messages))
        last = messages[-1]
        text = f"The tool said {last.content}." if last.role == "tool" else self.reply
        for word in text.split():
            await asyncio.sleep(self.step_s)
            yield word + " "

    async def stream_json(
        self, messages: Sequence[ChatMessage], schema: Mapping[str, Any], *, prefix: str = ""
    ) -> AsyncIterator[str]:
        self.json_prompts.append((prefix, schema))
        text = json.dumps(schema["enum"][0]) if "enum" in schema else self.arguments
        for char in text:
            await asyncio.sleep(self.step_s)
            yield char

    async def warm(self, system_prompt: str) -> None:
        return None

    def count_tokens(self, text: str) -> int:
        return len(text.split()) + 1


class SimClock:
    def __init__(self) -> None:
        self.t = 0.0

    def now_ms(self) -> float:
        return self.t


@dataclass
class Gate:
    """A tool that waits until the test opens it; counts its runs."""

    result: Any = field(default_factory=lambda: {"city": "Paris", "forecast": "sunny"})
    runs: int = 0
    opened: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, **kwargs: Any) -> Any:
        self.runs += 1
        await self.opened.wait()
        return self.result


def weather_registry(gate: Gate, *, side_effects: bool = False) -> ToolRegistry:
    registry = ToolRegistry()

    async def get_weather(city: str) -> Any:
        """Get the current weather in a city."""
        return await gate(city=city)

    async def book_table(city: str) -> Any:
        """Book a table at a restaurant in a city."""
        return await gate(city=city)

    if side_effects:
        registry.register(book_table, side_effects=True, keywords=("weather",))
    else:
        registry.register(get_weather)
    return registry


class Harness:
    """A Session on fakes and a simulated clock; the test moves time and speaks."""

    def __init__(
        self,
        llm: FakeLLM | None = None,
        tools: ToolRegistry | None = None,
        *,
        tool_budget_ms: float = 60_000.0,
        speculate: bool = False,
        tts: Any = None,
        turns: Mapping[str, Any] | None = None,
    ) -> None:
        self.llm = llm or FakeLLM()
        self.clock = SimClock()
        runtime = Runtime(asr=FakeASR(), llm=self.llm, tts=tts or FakeTTS())  # type: ignore[arg-type]
        # `finish()` moves this clock 200 ms per few ms of real work: a slow-start holding
        # phrase would come at random, so it is off unless a test sets `holding_phrase_ms`.
        turn_config = {"speculate": speculate, "holding_phrase_ms": 1e9, **(turns or {})}
        profile = Profile(budgets={"tool": tool_budget_ms}, turns=turn_config)
        self.session = Session(
            runtime,
            profile,
            options=SessionOptions(auto_tick=False),
            clock=self.clock,
            tools=tools,
        )
        self.outputs: list[out.SessionOutput] = []
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Harness:
        await self.session.start()

        async def read() -> None:
            async for item in self.session.events():
                self.outputs.append(item)

        self._reader = asyncio.create_task(read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.session.close()
        if self._reader is not None:
            await self._reader

    def of(self, kind: type) -> list[Any]:
        return [item for item in self.outputs if isinstance(item, kind)]

    async def pump(self, rounds: int = 3) -> None:
        """Let tasks and worker threads (TTS) run; the simulated clock stands still."""
        for _ in range(rounds):
            await asyncio.sleep(0.002)

    async def advance(self, ms: float, step_ms: float = 20.0) -> None:
        """Move time on in ticks (playback plays, silences end turns)."""
        end = self.clock.t + ms
        while self.clock.t < end:
            self.clock.t = min(end, self.clock.t + step_ms)
            self.session.tick()
            await asyncio.sleep(0)
        await self.pump(1)

    def ask(self, text: str) -> None:
        self.session.add_user_text(text)

    def speak(self, text: str) -> None:
        """The user says `text` (VAD and ASR as events): a barge-in while the agent talks."""
        feed, now = self.session._feed, self.clock.t
        feed(ev.SpeechStarted(now, now))
        feed(ev.SpeechEnded(now + 1, now + 1))
        feed(ev.Transcript(now + 1, text, True, now + 1))

    async def until(self, predicate: Any, limit: int = 400) -> bool:
        for _ in range(limit):
            if predicate():
                return True
            await asyncio.sleep(0.002)
        return predicate()

    async def finish(self, limit_ms: float = 30_000.0) -> None:
        """Play everything out until the agent is listening again."""
        waited = 0.0
        while waited < limit_ms:
            await self.pump(2)
            if self.session.controller.state is ev.TurnState.LISTENING and not self._busy():
                return
            await self.advance(200.0)
            waited += 200.0

    def _busy(self) -> bool:
        return any(
            g.task is not None and not g.task.done() for g in self.session._generations.values()
        )
