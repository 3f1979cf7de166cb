"""A scripted stand-in for a Realtime server: energy VAD, canned replies, records truncates.

It lets the simulated user's timing and barge-in logic be tested without models.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import numpy as np

from cadence.bench import links as ln
from cadence.bench.scenarios import Cue, Script, Utterance

LOUD = 0.01
HANGOVER_FRAMES = 10  # 200 ms of quiet ends the user's turn


def tone(seconds: float, level: float = 0.1) -> Utterance:
    t = np.arange(int(seconds * 16_000)) / 16_000
    return Utterance((level * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 0.0, seconds)


def script(*cues: Cue, scenario: str = "single") -> Script:
    return Script(scenario, 0, 0, cues, 50.0, "pink", 1)


def cue(kind: str = "question", start: str = "begin", delay_s: float = 0.1, text: str = "hi"):
    expect = r"\bparis\b" if kind != "backchannel" else None
    return Cue(text, kind, expect, start, delay_s, "piper", 1.0, -20.0)  # type: ignore[arg-type]


class FakeRealtime:
    """Replies `reply_delay_s` after the user's turn ends with `reply_s` of audio, pushed fast."""

    paced = False

    def __init__(
        self, *, reply_delay_s: float = 0.1, reply_s: float = 2.0, deaf_after_reply: bool = False
    ) -> None:
        self.reply_delay_s = reply_delay_s
        self.reply_s = reply_s
        self.deaf_after_reply = deaf_after_reply  # hears nothing once it has answered
        self.truncates: list[tuple[str, str, float]] = []
        self.pictures = 0
        self._queue: asyncio.Queue[ln.ClientEvent | None] = asyncio.Queue()
        self._speaking = False
        self._quiet = 0
        self._n = 0
        self._current: str | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> FakeRealtime:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._queue.put(None)

    def _put(self, event: ln.ClientEvent) -> None:
        self._queue.put_nowait(event)

    async def send_audio(self, frame: np.ndarray) -> None:
        if self.deaf_after_reply and self._n:
            return
        loud = float(np.sqrt(np.mean(frame**2))) > LOUD
        now = time.perf_counter()
        if loud and not self._speaking:
            self._speaking, self._quiet = True, 0
            self._put(ln.SpeechStarted(now))
            if self._current is not None:  # barge-in: cancel what is being said
                self._put(ln.ResponseDone(now, self._current, "cancelled", ""))
                self._current = None
        elif self._speaking and not loud:
            self._quiet += 1
            if self._quiet >= HANGOVER_FRAMES:
                self._speaking = False
                self._put(ln.SpeechStopped(now))
                self._put(ln.Transcript(now, "hi"))
                task = asyncio.create_task(self._reply())
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        elif loud:
            self._quiet = 0

    async def _reply(self) -> None:
        await asyncio.sleep(self.reply_delay_s)
        self._n += 1
        key = f"resp_{self._n}"
        self._current = key
        self._put(ln.ResponseCreated(time.perf_counter(), key))
        for _ in range(int(self.reply_s / 0.5)):
            self._put(ln.AudioIn(time.perf_counter(), key, f"item_{self._n}", 500.0))
            await asyncio.sleep(0.01)
        done = ln.ResponseDone(time.perf_counter(), key, "completed", "It is Paris.", {"v2v": 1})
        self._put(done)

    async def show(self, pixels: np.ndarray) -> None:
        self.pictures += 1

    async def truncate(self, key: str, item: str, played_ms: float) -> None:
        self.truncates.append((key, item, played_ms))

    async def events(self) -> AsyncIterator[ln.ClientEvent]:
        while (event := await self._queue.get()) is not None:
            yield event
