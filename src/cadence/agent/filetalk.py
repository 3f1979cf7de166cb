"""Talk to the agent with an audio file: the engine behind `cadence talk`.

The file is streamed through a real Session in 20 ms frames. With `realtime`, frames go at
wall-clock pace (latencies mean what a caller would feel); otherwise a fast-forward clock
skips over the audio while model work is still timed for real.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cadence.agent import outputs as out
from cadence.agent.clock import Clock, FastForwardClock, MonotonicClock
from cadence.agent.events import TurnState
from cadence.agent.runtime import Runtime
from cadence.agent.session import Session, SessionOptions
from cadence.audio.chunk import AudioChunk
from cadence.config import Profile
from cadence.video.frames import VideoFrame

FRAME_S = 0.02
TRAILING_SILENCE_S = 1.5
REPLY_TIMEOUT_S = 60.0
OUTPUT_RATE = 24_000


@dataclass
class TurnResult:
    user: str
    reply: str = ""  # what was played (and committed to the history)
    generated: str = ""
    interrupted: bool = False
    latency: dict[str, Any] = field(default_factory=dict)
    audio: list[AudioChunk] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"user": self.user, "reply": self.reply, "latency": self.latency}


@dataclass
class TalkResult:
    turns: list[TurnResult]
    errors: list[str]

    def reply_audio(self, gap_s: float = 0.4) -> AudioChunk:
        """Every reply, in order, separated by a short silence (24 kHz mono)."""
        parts: list[np.ndarray] = []
        for turn in self.turns:
            parts.extend(c.samples[:, 0] for c in turn.audio)
            parts.append(np.zeros(int(gap_s * OUTPUT_RATE), np.float32))
        data = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        return AudioChunk(data.reshape(-1, 1), OUTPUT_RATE)


class _Collector:
    """Turns the session's outputs into per-turn results."""

    def __init__(self) -> None:
        self.turns: list[TurnResult] = []
        self.errors: list[str] = []
        self._by_gen: dict[int, TurnResult] = {}
        self._user = ""

    def take(self, item: out.SessionOutput) -> None:
        match item:
            case out.UserTurnCommitted():
                # A promoted speculative reply starts before the user turn is committed.
                last = self.turns[-1] if self.turns else None
                if last is not None and not last.user and not last.reply:
                    last.user = item.text
                else:
                    self._user = item.text
            case out.ResponseStarted():
                turn = TurnResult(user=self._user)
                self._user = ""
                self._by_gen[item.generation] = turn
                self.turns.append(turn)
            case out.ResponseAudio() if item.generation in self._by_gen:
                self._by_gen[item.generation].audio.append(item.audio)
            case out.ResponseDone() if item.generation in self._by_gen:
                turn = self._by_gen[item.generation]
                turn.generated, turn.latency = item.text, item.latency
            case out.AssistantTurnCommitted() if item.generation in self._by_gen:
                turn = self._by_gen[item.generation]
                turn.reply, turn.interrupted = item.text, item.interrupted
            case out.SessionError():
                self.errors.append(f"{item.code}: {item.message}")
            case _:
                pass


async def talk_file(
    runtime: Runtime,
    audio: AudioChunk,
    *,
    profile: Profile | None = None,
    realtime: bool = False,
    frames: Sequence[VideoFrame] = (),
) -> TalkResult:
    """Stream `audio` (and show `frames`, a camera's view) through a session; collect turns."""
    clock: Clock = MonotonicClock() if realtime else FastForwardClock()
    session = Session(runtime, profile, options=SessionOptions(auto_tick=realtime), clock=clock)
    collector = _Collector()

    async def collect() -> None:
        async for item in session.events():
            collector.take(item)

    frame = max(1, round(FRAME_S * audio.sample_rate))
    source = audio.float32()
    tail = np.zeros((round(TRAILING_SILENCE_S * source.sample_rate), source.channels), np.float32)
    padded = AudioChunk(np.concatenate([source.samples, tail]), source.sample_rate)
    async with asyncio.TaskGroup() as group:
        reader = group.create_task(collect())
        await session.start()
        for video_frame in frames:
            session.push_frame(video_frame)
        try:
            start_wall = time.perf_counter()
            for k, i in enumerate(range(0, padded.frames, frame)):
                piece = AudioChunk(padded.samples[i : i + frame], padded.sample_rate)
                if realtime:
                    delay = start_wall + k * FRAME_S - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                else:
                    assert isinstance(clock, FastForwardClock)
                    await _settle(session, clock)
                    clock.jump_to(clock.now_ms() + FRAME_S * 1000.0)
                session.push_audio(piece)
                if not realtime:
                    session.tick()
                await asyncio.sleep(0)
            await _wait_idle(session, clock, realtime)
        finally:
            await session.close()
            await reader
    return TalkResult(collector.turns, collector.errors)


async def _settle(session: Session, clock: FastForwardClock) -> None:
    """Offline: let in-flight model work finish before feeding more audio. Time stands
    still while the ASR works (live audio would have kept coming) and runs with the wall
    clock while a reply is computed; playback of a finished reply is skipped over."""
    deadline = time.perf_counter() + REPLY_TIMEOUT_S
    while time.perf_counter() < deadline:
        state = session.controller.state
        replying = state in (TurnState.THINKING, TurnState.SPEAKING)
        if session.asr_busy:
            clock.stop()
        elif state is TurnState.SPEAKING and session.generation_finished:
            clock.stop()
            clock.jump_to(clock.now_ms() + session.playout.remaining_ms + 1.0)
        elif replying:
            clock.run()
        else:
            clock.stop()
            return
        await asyncio.sleep(0.005)
        if not session.asr_busy:
            session.tick()
    clock.stop()


async def _wait_idle(session: Session, clock: Clock, realtime: bool) -> None:
    deadline = time.perf_counter() + REPLY_TIMEOUT_S
    while time.perf_counter() < deadline:
        busy = session.asr_busy or session.controller.state in (
            TurnState.THINKING,
            TurnState.SPEAKING,
            TurnState.INTERRUPTED,
        )
        if not busy:
            return
        if not realtime and isinstance(clock, FastForwardClock):
            await _settle(session, clock)
        await asyncio.sleep(0.01)
