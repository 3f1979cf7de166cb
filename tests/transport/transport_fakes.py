"""A model-free stand-in for `Session`: energy VAD, canned transcript, a tone as the reply.

It speaks the same `SessionOutput` vocabulary, so the transports are tested end to end
(WebSocket, WebRTC, data channel, pacing, barge-in) in seconds without loading a model.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import numpy as np

from cadence.agent import outputs as out
from cadence.agent.clock import MonotonicClock
from cadence.audio.chunk import AudioChunk
from cadence.config import Profile

HEARD = "what is the capital of france"
REPLY_AUDIO_S = 0.6
SILENCE_END_MS = 300.0
ENERGY = 0.02


@dataclass
class FakeOptions:
    turn_detection: bool = True


@dataclass
class FakeHistory:
    items: list[tuple[str, str]] = field(default_factory=list)

    def add_user(self, text: str) -> None:
        self.items.append(("user", text))

    def add_assistant(self, text: str) -> None:
        self.items.append(("assistant", text))


def tone(seconds: float, rate: int = 24_000, hz: float = 440.0) -> AudioChunk:
    t = np.arange(int(seconds * rate)) / rate
    return AudioChunk((0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32).reshape(-1, 1), rate)


class FakeSession:
    instances: list[FakeSession] = []  # noqa: RUF012  (tests inspect what sessions saw)

    def __init__(
        self, profile: Profile, turn_detection: bool = True, reply_s: float = REPLY_AUDIO_S
    ):
        self.profile = profile
        self.options = FakeOptions(turn_detection)
        self.clock = MonotonicClock()
        self.history = FakeHistory()
        self.images: list[bytes] = []
        self.frames: list[object] = []
        self.played: list[tuple[int, float]] = []
        self.audio_ms = 0.0
        self.reply_s = reply_s
        self._queue: asyncio.Queue[out.SessionOutput | None] = asyncio.Queue()
        self._speaking = False
        self._voiced = False
        self._last_voice_ms = 0.0
        self._generation = 0
        self._reply: asyncio.Task[None] | None = None
        self.closed = False
        self.started = False
        FakeSession.instances.append(self)

    def _emit(self, item: out.SessionOutput) -> None:
        if not self.closed:
            self._queue.put_nowait(item)

    async def start(self) -> None:
        self.started = True
        self._emit(out.StateUpdate("listening"))

    async def close(self) -> None:
        if self.closed:
            return
        if self._reply is not None:
            self._reply.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reply
        self.closed = True
        self._queue.put_nowait(None)

    async def events(self) -> AsyncIterator[out.SessionOutput]:
        while (item := await self._queue.get()) is not None:
            yield item

    def push_audio(self, chunk: AudioChunk) -> None:
        now = self.clock.now_ms()
        samples = chunk.mono().float32().samples[:, 0]
        self.audio_ms += chunk.duration_s * 1000.0
        loud = float(np.sqrt(np.mean(samples**2))) > ENERGY if len(samples) else False
        if loud:
            self._last_voice_ms = self.audio_ms
            if not self._speaking:
                self._speaking = self._voiced = True
                self._emit(out.UserSpeechStarted(now))
                if self._reply is not None and not self._reply.done():
                    self._emit(out.PlaybackControl(self._generation, "stop"))
                    self._cancel("turn_detected")
        elif self._speaking and self.audio_ms - self._last_voice_ms > SILENCE_END_MS:
            self._speaking = False
            self._emit(out.UserSpeechStopped(now - SILENCE_END_MS))
            self._emit(out.UserTranscript("what is", False))
            if self.options.turn_detection:
                self._commit()
                self._start_reply()

    def _commit(self) -> None:
        self._emit(out.UserTranscript(HEARD, True))
        self.history.add_user(HEARD)
        self._emit(out.UserTurnCommitted(HEARD))
        self._voiced = False

    def add_user_text(self, text: str) -> None:
        self.history.add_user(text)
        self._emit(out.UserTurnCommitted(text))
        self._start_reply()

    def add_image(self, data: bytes) -> None:
        self.images.append(data)

    def push_frame(self, frame: object) -> None:
        self.frames.append(frame)

    def request_response(self, text: str | None = None) -> None:
        self._start_reply()

    def commit_audio(self) -> None:
        if self._voiced:
            self._commit()

    def clear_audio(self) -> None:
        self._voiced = False

    def cancel_response(self) -> None:
        self._cancel("client_cancelled")

    def report_played(self, generation: int, played_ms: float) -> None:
        self.played.append((generation, played_ms))

    def _cancel(self, reason: str) -> None:
        if self._reply is not None and not self._reply.done():
            self._reply.cancel()
            self._emit(out.ResponseDone(self._generation, "", "cancelled", {}, reason))
            self._emit(out.StateUpdate("listening"))

    def _start_reply(self) -> None:
        self._cancel("superseded")
        self._generation += 1
        last_user = next((t for r, t in reversed(self.history.items) if r == "user"), "")
        text = (
            "The capital of France is Paris."
            if "france" in last_user.lower()
            else (f"You said: {last_user}." if last_user else "Hello.")
        )
        self._reply = asyncio.create_task(self._speak(self._generation, text))

    async def _speak(self, generation: int, text: str) -> None:
        self._emit(out.StateUpdate("thinking"))
        self._emit(out.ResponseStarted(generation))
        await asyncio.sleep(0.05)
        self._emit(out.StateUpdate("speaking"))
        half = text.split(" ", 3)
        clauses = [" ".join(half[:3]), half[3]] if len(half) > 3 else [text]
        for clause in clauses:
            self._emit(out.ResponseText(generation, clause))
            self._emit(out.ResponseAudio(generation, tone(self.reply_s / len(clauses))))
            await asyncio.sleep(0.02)
        latency = {"generation": generation, "endpoint": 5.0, "v2v": 60.0, "budget_breaches": []}
        self._emit(out.ResponseDone(generation, text, "completed", latency))
        self.history.add_assistant(text)
        self._emit(out.AssistantTurnCommitted(generation, text, False, self.reply_s * 1000))
        self._emit(out.StateUpdate("listening"))


def fake_factory(reply_s: float = REPLY_AUDIO_S):
    def make(profile: Profile, turn_detection: bool) -> FakeSession:
        return FakeSession(profile, turn_detection, reply_s)

    return make
