"""A cancelled reply ends the model's stream at once, even while the writer waits on a full
clause queue (a remote engine must hang up and stop generating, not wait for collection)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator

import numpy as np

from cadence.agent.generation import (
    CLAUSE_QUEUE_SIZE,
    Generation,
    GenerationCallbacks,
    run_generation,
)
from cadence.llm.base import ChatMessage


class EndlessLLM:
    """Clause after clause, forever; notes when its stream is closed. It keeps its streams
    (as a backend tracking its requests would), so nothing but an explicit close ends one."""

    def __init__(self) -> None:
        self.yielded = 0
        self.closed = asyncio.Event()
        self.streams: list[AsyncIterator[str]] = []

    def stream(self, messages: object, options: object = None) -> AsyncIterator[str]:
        self.streams.append(self._clauses())
        return self.streams[-1]

    async def _clauses(self) -> AsyncIterator[str]:
        try:
            while True:
                self.yielded += 1
                yield f"Clause number {self.yielded}. "
                await asyncio.sleep(0)
        finally:
            self.closed.set()


class BlockedTTS:
    """The first synthesis blocks until released: the clause queue fills up behind it."""

    sample_rate = 16_000

    def __init__(self) -> None:
        self.release = threading.Event()

    def stream(self, text: str) -> Iterator[np.ndarray]:
        self.release.wait(10.0)
        yield np.zeros(160, np.float32)


async def test_cancel_while_the_clause_queue_is_full_closes_the_model_stream() -> None:
    llm, tts = EndlessLLM(), BlockedTTS()
    gen = Generation(1, "Count for me.", False)
    callbacks = GenerationCallbacks(
        on_delta=lambda *_: None,
        on_clause=lambda *_: None,
        on_audio=lambda *_: None,
        on_llm_done=lambda *_: None,
    )
    messages = [ChatMessage("user", "Count for me.")]
    task = asyncio.create_task(run_generation(gen, messages, llm, tts, 16_000, callbacks))  # type: ignore[arg-type]
    for _ in range(500):  # until the writer is parked on the full queue
        if llm.yielded > CLAUSE_QUEUE_SIZE + 1:
            break
        await asyncio.sleep(0.002)
    await asyncio.sleep(0.02)
    assert not llm.closed.is_set()
    task.cancel()
    try:
        await asyncio.wait_for(llm.closed.wait(), 1.0)
    finally:
        tts.release.set()
        await asyncio.gather(task, return_exceptions=True)
