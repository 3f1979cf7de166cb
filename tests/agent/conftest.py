"""A live call in real time for end-to-end turn-taking tests: a mic that can carry the
user's speech, the agent's own voice coming back (echo) and room noise, and a speaker that
plays the agent's audio at 1x and obeys pause/resume/stop like a real player."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from cadence.agent import outputs as out
from cadence.agent.clock import MonotonicClock
from cadence.agent.runtime import Runtime
from cadence.agent.session import Session, SessionOptions
from cadence.audio.chunk import AudioChunk
from cadence.config import Profile

RATE = 16_000
FRAME = 320  # 20 ms


@dataclass
class Echo:
    delay_ms: float = 120.0
    gain: float = 0.3
    noise_rms: float = 0.003


@dataclass
class LiveCall:
    runtime: Runtime
    profile: Profile
    echo: Echo | None = None
    outputs: list[tuple[float, out.SessionOutput]] = field(default_factory=list)
    played: list[tuple[float, int]] = field(default_factory=list)  # (wall s, generation)
    _speech: deque[tuple[np.ndarray, bool]] = field(default_factory=deque)  # frame, voice starts
    _speaker: deque[tuple[int, np.ndarray]] = field(default_factory=deque)
    _paused: bool = False
    speech_starts: list[float] = field(default_factory=list)  # wall s of injected speech

    def say(self, audio: AudioChunk) -> None:
        """Queue user speech; it goes out frame by frame from the next tick."""
        samples = audio.to(RATE).mono_f32()
        voice_frame = int(float(audio.meta.get("speech_start_s", 0.0)) * RATE) // FRAME  # type: ignore[arg-type]
        for k, i in enumerate(range(0, len(samples), FRAME)):
            frame = samples[i : i + FRAME]
            self._speech.append((np.pad(frame, (0, FRAME - len(frame))), k == voice_frame))

    def _play_frame(self) -> tuple[int, np.ndarray]:
        """The next 20 ms of queued agent audio, across chunk boundaries."""
        frame = np.zeros(FRAME, np.float32)
        filled, gen = 0, self._speaker[0][0]
        while filled < FRAME and self._speaker:
            gen, samples = self._speaker[0]
            take = min(FRAME - filled, len(samples))
            frame[filled : filled + take] = samples[:take]
            filled += take
            if take == len(samples):
                self._speaker.popleft()
            else:
                self._speaker[0] = (gen, samples[take:])
        return gen, frame

    def busy_saying(self) -> bool:
        return bool(self._speech)

    def _on_output(self, item: out.SessionOutput) -> None:
        self.outputs.append((time.perf_counter(), item))
        if isinstance(item, out.ResponseAudio):
            # one continuous stream of samples, as a player has: no padding between chunks
            self._speaker.append((item.generation, item.audio.to(RATE).mono_f32()))
        elif isinstance(item, out.PlaybackControl):
            if item.command == "pause":
                self._paused = True
            elif item.command == "resume":
                self._paused = False
            else:
                self._paused = False
                kept = [(g, f) for g, f in self._speaker if g != item.generation]
                self._speaker = deque(kept)

    async def run(self, seconds: float, until=None) -> None:  # type: ignore[no-untyped-def]
        session = Session(
            self.runtime, self.profile, options=SessionOptions(), clock=MonotonicClock()
        )
        self.session = session
        delay_frames = round((self.echo.delay_ms if self.echo else 0) / 20)
        echo_line: deque[np.ndarray] = deque(
            [np.zeros(FRAME, np.float32)] * max(1, delay_frames), maxlen=max(1, delay_frames)
        )
        rng = np.random.default_rng(7)

        async def read() -> None:
            async for item in session.events():
                self._on_output(item)

        await session.start()
        reader = asyncio.create_task(read())
        start = time.perf_counter()
        k = 0
        try:
            while time.perf_counter() - start < seconds:
                if until is not None and until(self):
                    break
                k += 1
                wait = start + k * 0.02 - time.perf_counter()
                if wait > 0:
                    await asyncio.sleep(wait)
                # speaker: one 20 ms frame of agent audio, unless paused
                heard = np.zeros(FRAME, np.float32)
                if self._speaker and not self._paused:
                    gen, heard = self._play_frame()
                    self.played.append((time.perf_counter(), gen))
                mic = np.zeros(FRAME, np.float32)
                if self._speech:
                    frame, voice_starts = self._speech.popleft()
                    if voice_starts:
                        self.speech_starts.append(time.perf_counter())
                    mic += frame
                if self.echo:
                    echo_line.append(heard.copy())
                    mic += self.echo.gain * echo_line[0]
                    mic += (self.echo.noise_rms * rng.standard_normal(FRAME)).astype(np.float32)
                session.push_audio(AudioChunk(mic.reshape(-1, 1), RATE))
        finally:
            await session.close()
            await reader

    def of(self, kind: type) -> list:  # type: ignore[type-arg]
        return [item for _, item in self.outputs if isinstance(item, kind)]

    def agent_speaking(self) -> bool:
        return bool(self.played) and time.perf_counter() - self.played[-1][0] < 0.05
