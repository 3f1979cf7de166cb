"""WebRTC media: the agent's paced outbound audio track, inbound audio/video conversion.

The outbound track is the playback clock over WebRTC: it sends 20 ms frames at real time,
obeys pause/resume/stop at the next frame and reports how much of each generation it sent.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
from aiortc import RTCPeerConnection
from aiortc.jitterbuffer import JitterBuffer
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from cadence.audio.chunk import AudioChunk
from cadence.video.frames import VideoFrame as CadenceFrame

OUT_RATE = 48_000  # Opus runs at 48 kHz; giving aiortc 48 kHz avoids a second resampling
FRAME_MS = 20
MAX_LAG_S = 0.5  # if the sender fell further behind than this, restart the clock

PlayedReport = Callable[[int, float], None]
_JITTER_ATTR = "_RTCRtpReceiver__jitter_buffer"  # aiortc 1.16's RTCRtpReceiver.__jitter_buffer

log = logging.getLogger(__name__)


@dataclass
class _Segment:
    generation: int
    samples: np.ndarray  # int16 mono at OUT_RATE
    offset: int = 0


class AgentAudioTrack(MediaStreamTrack):
    """Paced agent speech; silence when idle or paused."""

    kind = "audio"

    def __init__(self, report_played: PlayedReport | None = None, *, rate: int = OUT_RATE) -> None:
        super().__init__()
        self.rate = rate
        self.samples_per_frame = rate * FRAME_MS // 1000
        self._segments: deque[_Segment] = deque()
        self._paused: int | None = None  # the paused generation
        self._played: dict[int, int] = {}  # generation → samples sent
        self._report = report_played
        self._start: float | None = None
        self._pts = 0
        self.frames_sent = 0
        self.audio_frames_sent = 0

    # ---- control (called from the session pump; takes effect at the next frame) ---------

    def enqueue(self, generation: int, audio: AudioChunk) -> None:
        pcm = audio.to(self.rate, dtype="int16").samples[:, 0]
        if len(pcm):
            self._segments.append(_Segment(generation, np.ascontiguousarray(pcm)))

    def control(self, generation: int, command: str) -> None:
        if command == "pause":
            self._paused = generation
        elif command == "resume":
            if self._paused == generation:
                self._paused = None
        elif command == "stop":
            # Barge-in: everything queued of this generation (and older ones) is dropped now.
            self._segments = deque(s for s in self._segments if s.generation > generation)
            if self._paused is not None and self._paused <= generation:
                self._paused = None

    @property
    def queued_ms(self) -> float:
        samples = sum(len(s.samples) - s.offset for s in self._segments)
        return samples * 1000.0 / self.rate

    def played_ms(self, generation: int) -> float:
        return self._played.get(generation, 0) * 1000.0 / self.rate

    # ---- the frame clock -----------------------------------------------------------------

    def _take(self) -> tuple[np.ndarray, dict[int, int]]:
        frame = np.zeros(self.samples_per_frame, np.int16)
        taken: dict[int, int] = {}
        filled = 0
        while filled < len(frame) and self._segments:
            seg = self._segments[0]
            if self._paused is not None and seg.generation == self._paused:
                break
            n = min(len(frame) - filled, len(seg.samples) - seg.offset)
            frame[filled : filled + n] = seg.samples[seg.offset : seg.offset + n]
            seg.offset += n
            filled += n
            taken[seg.generation] = taken.get(seg.generation, 0) + n
            if seg.offset >= len(seg.samples):
                self._segments.popleft()
        return frame, taken

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None or now - (self._start + self._pts / self.rate) > MAX_LAG_S:
            self._start = now - self._pts / self.rate
        wait = self._start + self._pts / self.rate - now
        if wait > 0:
            await asyncio.sleep(wait)
        samples, taken = self._take()
        for generation, n in taken.items():
            self._played[generation] = self._played.get(generation, 0) + n
            if self._report is not None:
                self._report(generation, self.played_ms(generation))
        if len(self._played) > 64:  # old generations are never reported again
            for old in sorted(self._played)[:-8]:
                del self._played[old]
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, self.rate)
        self._pts += len(samples)
        self.frames_sent += 1
        self.audio_frames_sent += bool(taken)
        return frame


def listen_without_prefetch(pc: RTCPeerConnection) -> bool:
    """Inbound audio goes to VAD and ASR, not to a speaker: aiortc holds 4 packets (80 ms)
    back to smooth jitter for playback, which only delays the end of every user turn. Each
    audio receiver gets a jitter buffer that releases a packet once the next one arrives
    (20 ms; order and loss handling unchanged). It is aiortc's private attribute (aiortc is
    pinned): when it is missing, nothing changes and the call works as before."""
    swapped = True
    for transceiver in pc.getTransceivers():
        receiver = transceiver.receiver
        if transceiver.kind != "audio" or receiver is None:
            continue
        if not hasattr(receiver, _JITTER_ATTR):
            log.warning("aiortc has no %s; inbound audio keeps its 80 ms prefetch", _JITTER_ATTR)
            swapped = False
            continue
        setattr(receiver, _JITTER_ATTR, JitterBuffer(capacity=16, prefetch=0))
    return swapped


def audio_frame_to_chunk(frame: Any) -> AudioChunk:
    """An aiortc/PyAV audio frame (any layout) → AudioChunk at its own rate."""
    channels = len(frame.layout.channels)
    data = frame.to_ndarray()
    if frame.format.is_planar:
        data = data.T  # (channels, samples) → (samples, channels)
    else:
        data = data.reshape(-1, channels)
    return AudioChunk.from_array(np.ascontiguousarray(data), frame.sample_rate, channels=channels)


def frame_time_s(frame: Any) -> float:
    """A media frame's timestamp in seconds (arrival time when it has none)."""
    if frame.pts is None or frame.time_base is None:
        return time.monotonic()
    return float(frame.pts * fractions.Fraction(frame.time_base))


def to_cadence_frame(frame: Any, source: str = "camera") -> CadenceFrame:
    """An aiortc/PyAV video frame → the session's RGB `VideoFrame`, keeping its clock."""
    pixels = frame.to_ndarray(format="rgb24")
    if frame.pts is None or frame.time_base is None:
        return CadenceFrame.at(pixels, time.monotonic(), source)
    return CadenceFrame(pixels, int(frame.pts), fractions.Fraction(frame.time_base), source)


@dataclass(frozen=True)
class ReceivedFrame:
    received_s: float  # time.monotonic() on arrival
    frame: Any  # av.VideoFrame as aiortc decoded it


class VideoFrameBuffer:
    """The latest camera/screen frames of a call; the oldest is dropped when full."""

    def __init__(self, max_frames: int) -> None:
        self._frames: deque[ReceivedFrame] = deque(maxlen=max_frames)
        self.received = 0

    def push(self, frame: Any) -> None:
        self._frames.append(ReceivedFrame(time.monotonic(), frame))
        self.received += 1

    def latest(self) -> ReceivedFrame | None:
        return self._frames[-1] if self._frames else None

    def frames(self) -> list[ReceivedFrame]:
        return list(self._frames)
