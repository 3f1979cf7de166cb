"""One reply attempt: LLM tokens → clause chunker → TTS audio, tagged with its generation id.

A generation runs as two tasks (text producer, speech synthesizer) joined by a bounded
queue, so TTS of clause 1 overlaps the LLM writing clause 2. Cancelling it cancels both;
the session drops anything it still emits afterwards by its id. A custom `writer` (a tool
turn) drives the same pipeline: fixed clauses (a holding phrase) and model text, in order.

Each stage shows its progress (`Generation.stages`: waiting now, results so far) so the
session can tell a stalled one (agent/stalls.py) and stop the reply with `Generation.fail`;
a stage that raises ends the reply with a `ModelError` naming it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cadence.audio.chunk import AudioChunk, StreamResampler
from cadence.audio.stages import SpeechSynthesizer
from cadence.errors import CadenceError, ModelError
from cadence.llm.base import ChatMessage, GenerationOptions, LLMBackend
from cadence.llm.chunker import ClauseChunker

log = logging.getLogger(__name__)

CLAUSE_QUEUE_SIZE = 16
STAGE_NAMES = {"llm": "the language model", "tts": "speech synthesis (TTS)"}


@dataclass
class GenerationCallbacks:
    """How a generation reports back to its session (all called on the event loop)."""

    on_delta: Callable[[int, str], None]
    on_clause: Callable[[int, str], None]
    on_audio: Callable[[int, str, AudioChunk, bool], None]  # gen, clause, audio, first chunk
    on_llm_done: Callable[[int], None]


@dataclass
class StageProgress:
    """One stage of a reply: is it being waited on now, and how many results it gave."""

    busy: bool = False
    steps: int = 0  # text deltas (llm), synthesized clauses (tts)

    @contextmanager
    def waiting(self) -> Iterator[None]:
        self.busy = True
        try:
            yield
        finally:
            self.busy = False
            self.steps += 1


def stage_failed(stage: str, exc: Exception) -> ModelError:
    """A model stage raised something other than a `CadenceError`: log it, name the stage."""
    log.error("%s failed mid-reply", STAGE_NAMES[stage], exc_info=exc)
    return ModelError(
        f"{STAGE_NAMES[stage]} failed mid-reply ({type(exc).__name__}); the reply was ended "
        "after what had already been spoken (details in the server log)"
    )


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
    stages: dict[str, StageProgress] = field(
        default_factory=lambda: {"llm": StageProgress(), "tts": StageProgress()}
    )
    speech: Speech | None = None  # the text side, once the pipeline runs
    failure: CadenceError | None = None  # set by `fail`: the pipeline stops with it
    stopped: asyncio.Event = field(default_factory=asyncio.Event)

    def fail(self, error: CadenceError) -> None:
        """Stop the pipeline from outside (a stalled stage); it raises `error` (first wins)."""
        self.failure = self.failure or error
        self.stopped.set()


class Speech:
    """The text side of a generation's pipeline: model deltas through the clause chunker,
    or whole clauses as they are; both reach the synthesizer in the order given."""

    def __init__(
        self, gen: Generation, callbacks: GenerationCallbacks, clauses: asyncio.Queue[str | None]
    ) -> None:
        self.gen = gen
        self._callbacks = callbacks
        self._clauses = clauses
        self.queued = 0  # clauses handed to the synthesizer
        self.held = False  # a holding phrase was spoken
        self._ended = False

    async def stream(self, deltas: AsyncIterator[str]) -> None:
        """Speak model text deltas (`llm.stream(...)`) as clauses, flushing at the end."""
        gen = self.gen
        chunker = ClauseChunker()
        try:
            while (delta := await self._next(deltas)) is not None:
                if not delta:  # a heartbeat: the model is working (counted as a step)
                    continue
                gen.text += delta
                self._callbacks.on_delta(gen.generation, delta)
                for clause in chunker.push(delta):
                    await self._put(clause)
        finally:
            # Cancelled while waiting on a full clause queue, the model's stream must still
            # end now (a remote engine hangs up and stops generating), not when collected.
            if isinstance(deltas, AsyncGenerator):
                await deltas.aclose()
        for clause in chunker.flush():
            await self._put(clause)

    async def _next(self, deltas: AsyncIterator[str]) -> str | None:
        with self.gen.stages["llm"].waiting():
            try:
                return await anext(deltas)
            except StopAsyncIteration:
                return None
            except CadenceError:
                raise
            except Exception as exc:
                raise stage_failed("llm", exc) from exc

    async def _put(self, clause: str) -> None:
        self.queued += 1
        self._callbacks.on_clause(self.gen.generation, clause)
        await self._clauses.put(clause)

    async def say(self, clause: str) -> None:
        """Speak a fixed clause now (a holding phrase); it is not model output."""
        self.gen.text += clause + " "
        self.held = True
        await self._put(clause)

    def interject(self, clause: str) -> bool:
        """Speak a holding phrase ahead of the model's text, if nothing has gone to the
        synthesizer yet (the model is slow to start); False when it is too late for that."""
        if self.queued or self.held or self._ended:
            return False
        self.gen.text = f"{clause} {self.gen.text}"  # before the model's unfinished clause
        self.held = True
        self.queued += 1
        self._callbacks.on_clause(self.gen.generation, clause)
        self._clauses.put_nowait(clause)  # the queue is empty: nothing was queued before
        return True

    async def end(self) -> None:
        self._ended = True
        await self._clauses.put(None)


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
    speech = gen.speech = Speech(gen, callbacks, clauses)

    async def write() -> None:
        if writer is None:
            await speech.stream(llm.stream(messages, options))
        else:
            await writer(speech)
        callbacks.on_llm_done(gen.generation)
        # Only a finished writer ends the clauses: on a failure the group cancels the speaker,
        # and a put into a full queue would wait for it forever.
        await speech.end()

    async def stop_when_failed() -> None:
        await gen.stopped.wait()
        assert gen.failure is not None
        raise gen.failure

    async def speak(stop: asyncio.Task[None]) -> None:
        first = True
        while (clause := await clauses.get()) is not None:
            resampler = StreamResampler(tts.sample_rate, output_rate)
            with gen.stages["tts"].waiting():
                try:
                    pieces = await asyncio.to_thread(_synthesize, tts, clause, resampler)
                except CadenceError:
                    raise
                except Exception as exc:
                    raise stage_failed("tts", exc) from exc
            for i, piece in enumerate(pieces):
                if piece.size:
                    callbacks.on_audio(
                        gen.generation,
                        clause if i == 0 else "",
                        AudioChunk(piece.reshape(-1, 1), output_rate),
                        first,
                    )
                    first = False
        stop.cancel()  # every clause is spoken: nothing left to stop

    try:
        async with asyncio.TaskGroup() as group:
            stop = group.create_task(stop_when_failed())
            group.create_task(write())
            group.create_task(speak(stop))
    except BaseExceptionGroup as group:
        # Callers handle one error, not a group: the first failure is the cause.
        raise group.exceptions[0] from None


def _synthesize(
    tts: SpeechSynthesizer, clause: str, resampler: StreamResampler
) -> list[np.ndarray]:
    pieces = [resampler.process(audio) for audio in tts.stream(clause)]
    pieces.append(resampler.process(np.zeros(0, np.float32), last=True))
    return pieces
