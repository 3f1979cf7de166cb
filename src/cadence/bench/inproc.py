"""The in-process target: a real `Session` on this event loop, driven on wall-clock time.

There is no transport: session outputs map straight onto client events, so the numbers are
the engine's own, with the bench sharing the process (and its GIL) with the models.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import numpy as np

from cadence.agent import outputs as out
from cadence.agent.clock import MonotonicClock
from cadence.agent.runtime import Runtime
from cadence.agent.session import Session, SessionOptions
from cadence.audio.chunk import AudioChunk
from cadence.bench import links as ln
from cadence.config import Profile
from cadence.video.frames import VideoFrame

MIC_RATE = 16_000
QUEUE_SIZE = 4096


class InprocLink:
    paced = False

    def __init__(self, runtime: Runtime, profile: Profile | None = None) -> None:
        self._session = Session(
            runtime, profile, options=SessionOptions(auto_tick=True), clock=MonotonicClock()
        )
        self._queue: asyncio.Queue[ln.ClientEvent | None] = asyncio.Queue(QUEUE_SIZE)
        self._pump: asyncio.Task[None] | None = None

    async def __aenter__(self) -> InprocLink:
        await self._session.start()
        self._pump = asyncio.create_task(self._forward(), name="bench-inproc-pump")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._session.close()  # ends events(), so the pump returns
        if self._pump is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump

    async def send_audio(self, frame: np.ndarray) -> None:
        self._session.push_audio(AudioChunk(frame.reshape(-1, 1), MIC_RATE))

    async def show(self, pixels: np.ndarray) -> None:
        now_s = self._session.clock.now_ms() / 1000.0
        self._session.push_frame(VideoFrame.at(pixels, now_s))

    async def truncate(self, key: str, item: str, played_ms: float) -> None:
        self._session.report_played(int(key), played_ms)

    async def events(self) -> AsyncIterator[ln.ClientEvent]:
        while (event := await self._queue.get()) is not None:
            yield event

    async def _forward(self) -> None:
        try:
            async for item in self._session.events():
                event = _convert(item, time.perf_counter())
                if event is not None:
                    await self._queue.put(event)  # back-pressure rather than dropping
        finally:
            await self._queue.put(None)


def _convert(item: out.SessionOutput, t: float) -> ln.ClientEvent | None:
    match item:
        case out.UserSpeechStarted():
            return ln.SpeechStarted(t)
        case out.UserSpeechStopped():
            return ln.SpeechStopped(t)
        case out.UserTurnCommitted():
            return ln.Transcript(t, item.text)
        case out.ResponseStarted():
            return ln.ResponseCreated(t, str(item.generation))
        case out.ResponseAudio():
            key = str(item.generation)
            return ln.AudioIn(t, key, key, item.audio.duration_s * 1000.0)
        case out.ResponseText():
            return ln.ReplyText(t, str(item.generation), item.text)
        case out.ResponseDone():
            return ln.ResponseDone(t, str(item.generation), item.status, item.text, item.latency)
        case out.PlaybackControl():
            return ln.PlaybackHint(t, str(item.generation), item.command)
        case out.SessionError():
            return ln.ServerError(t, f"{item.code}: {item.message}")
    return None
