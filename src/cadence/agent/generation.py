"""One reply attempt: LLM tokens → clause chunker → TTS audio, tagged with its generation id.

A generation runs as two tasks (text producer, speech synthesizer) joined by a bounded
queue, so TTS of clause 1 overlaps the LLM writing clause 2. Cancelling it cancels both;
the session drops anything it still emits afterwards by its id. A custom `writer` (a tool
turn) drives the same pipeline: fixed clauses (a holding phrase) and model text, in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cadence.audio.chunk import AudioChunk, StreamResampler
from cadence.audio.stages import SpeechSynthesizer
from cadence.llm.base import ChatMessage, GenerationOptions, LLMBackend
from cadence.llm.chunker import ClauseChunker

CLAUSE_QUEUE_SIZE = 16


@dataclass
class GenerationCallbacks:
    """How a generation reports back to its session (all called on the event loop)."""

    on_delta: Callable[[int, str], None]
    on_clause: Callable[[int, str], None]
    on_audio: Callable[[int, str, AudioChunk, bool], None]  # gen, clause, audio, first chunk
    on_llm_done: Callable[[int], None]


@dataclass
class Generation:
    generation: int
    user_text: str
    speculative: bool
    text: str = ""
    task: asyncio.Task[None] | None = None
    held: list[tuple[str, AudioChunk]] = field(default_factory=list)  # silent until promoted
    started_response: bool = False
    finished: bool = False
    cancelled: bool = False
    error: str = ""
    calls: list[Any] = field(default_factory=list)  # tool calls made by this generation
    responding: asyncio.Event = field(default_factory=asyncio.Event)  # set when not speculative


class Speech:
    """The text side of a generation's pipeline: model deltas through the clause chunker,
    or whole clauses as they are; both reach the synthesizer in the order given."""

    def __init__(
        self, gen: Generation, callbacks: GenerationCallbacks, clauses: asyncio.Queue[str | None]
    ) -> None:
        self.gen = gen
        self._callbacks = callbacks
        self._clauses = clauses

    async def stream(self, deltas: AsyncIterator[str]) -> None:
        """Speak model text deltas (`llm.stream(...)`) as clauses, flushing at the end."""
        gen, callbacks = self.gen, self._callbacks
        chunker = ClauseChunker()
        async for delta in deltas:
            gen.text += delta
            callbacks.on_delta(gen.generation, delta)
            for clause in chunker.push(delta):
                callbacks.on_clause(gen.generation, clause)
                await self._clauses.put(clause)
        for clause in chunker.flush():
            callbacks.on_clause(gen.generation, clause)
            await self._clauses.put(clause)

    async def say(self, clause: str) -> None:
        """Speak a fixed clause now (a holding phrase); it is not model output."""
        self.gen.text += clause + " "
        self._callbacks.on_clause(self.gen.generation, clause)
        await self._clauses.put(clause)


Writer = Callable[[Speech], Awaitable[None]]


async def run_generation(
    gen: Generation,
    messages: Sequence[ChatMessage],
    llm: LLMBackend,
    tts: SpeechSynthesizer,
    output_rate: int,
    callbacks: GenerationCallbacks,
    options: GenerationOptions | None = None,
    *,
    writer: Writer | None = None,
) -> None:
    """Stream one reply; returns when every clause has been synthesized.

    `writer` replaces the plain `llm.stream(messages, options)` source (a tool turn)."""
    clauses: asyncio.Queue[str | None] = asyncio.Queue(CLAUSE_QUEUE_SIZE)
    speech = Speech(gen, callbacks, clauses)

    async def write() -> None:
        try:
            if writer is None:
                await speech.stream(llm.stream(messages, options))
            else:
                await writer(speech)
            callbacks.on_llm_done(gen.generation)
        finally:
            await clauses.put(None)

    async def speak() -> None:
        first = True
        while (clause := await clauses.get()) is not None:
            resampler = StreamResampler(tts.sample_rate, output_rate)
            pieces = await asyncio.to_thread(_synthesize, tts, clause, resampler)
            for i, piece in enumerate(pieces):
                if piece.size:
                    callbacks.on_audio(
                        gen.generation,
                        clause if i == 0 else "",
                        AudioChunk(piece.reshape(-1, 1), output_rate),
                        first,
                    )
                    first = False

    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(write())
            group.create_task(speak())
    except BaseExceptionGroup as group:
        # Callers handle one error, not a group: the first failure is the cause.
        raise group.exceptions[0] from None


def _synthesize(
    tts: SpeechSynthesizer, clause: str, resampler: StreamResampler
) -> list[np.ndarray]:
    pieces = [resampler.process(audio) for audio in tts.stream(clause)]
    pieces.append(resampler.process(np.zeros(0, np.float32), last=True))
    return pieces
