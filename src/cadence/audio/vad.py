"""Voice activity detection: per-frame speech decisions turned into speech start/end events.

webrtcvad is the default (microseconds per frame); Silero (ONNX, bundled in `silero-vad`)
is the robust alternative for noisy rooms. Both feed the same hysteresis so events mean the
same thing: `start` after a short run of voiced frames (the barge-in gate), `end` after a
short run of unvoiced ones, each stamped on the audio timeline.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from cadence.audio.chunk import float32_to_pcm16
from cadence.errors import ConfigError

VAD_RATE = 16_000


@dataclass(frozen=True)
class VadConfig:
    """How speech is detected. Times are on the audio timeline, in milliseconds."""

    backend: Literal["webrtc", "silero"] = "webrtc"
    aggressiveness: int = 2  # webrtcvad 0 (least) .. 3 (most aggressive about rejecting noise)
    frame_ms: int = 20  # webrtcvad accepts 10, 20 or 30
    start_ms: int = 60  # voiced run that opens speech: short, so barge-in can react fast
    end_ms: int = 60  # unvoiced run that closes it; endpointing waits longer, in the controller
    min_rms_dbfs: float = -50.0  # frames quieter than this are never speech
    silero_threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.backend not in ("webrtc", "silero"):
            raise ConfigError(f"vad backend {self.backend!r} is not one of webrtc, silero")
        if self.backend == "webrtc" and self.frame_ms not in (10, 20, 30):
            raise ConfigError(f"webrtcvad frames are 10, 20 or 30 ms, not {self.frame_ms}")
        if not 0 <= self.aggressiveness <= 3:
            raise ConfigError(f"vad aggressiveness must be 0..3, not {self.aggressiveness}")


@dataclass(frozen=True)
class VadEvent:
    """Speech began or ended; `t_s` is on the audio timeline of the input."""

    kind: Literal["start", "end"]
    t_s: float


class FrameClassifier(Protocol):
    frame_samples: int

    def probability(self, frame: np.ndarray) -> float: ...


class WebRtcClassifier:
    def __init__(self, config: VadConfig) -> None:
        import webrtcvad

        self._vad = webrtcvad.Vad(config.aggressiveness)
        self.frame_samples = VAD_RATE * config.frame_ms // 1000

    def probability(self, frame: np.ndarray) -> float:
        return 1.0 if self._vad.is_speech(float32_to_pcm16(frame).tobytes(), VAD_RATE) else 0.0


class SileroClassifier:
    """Silero VAD v6 through ONNX Runtime, no torch: the ONNX file faster-whisper ships.

    512-sample frames at 16 kHz (32 ms), each prefixed with the previous frame's last 64
    samples; the LSTM state is carried from frame to frame.
    """

    frame_samples = 512
    _context = 64

    def __init__(self, config: VadConfig) -> None:
        import onnxruntime
        from faster_whisper.utils import get_assets_path

        opts = onnxruntime.SessionOptions()
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 4
        path = f"{get_assets_path()}/silero_vad_v6.onnx"
        self._session = onnxruntime.InferenceSession(
            path, providers=["CPUExecutionProvider"], sess_options=opts
        )
        self._h = np.zeros((1, 1, 128), np.float32)
        self._c = np.zeros((1, 1, 128), np.float32)
        self._prev = np.zeros(self._context, np.float32)

    def probability(self, frame: np.ndarray) -> float:
        x = np.concatenate([self._prev, frame]).reshape(1, -1).astype(np.float32)
        self._prev = frame[-self._context :].astype(np.float32)
        out, self._h, self._c = self._session.run(None, {"input": x, "h": self._h, "c": self._c})
        return float(np.asarray(out).reshape(-1)[0])


def make_classifier(config: VadConfig) -> FrameClassifier:
    if config.backend == "silero":
        return SileroClassifier(config)
    return WebRtcClassifier(config)


class VoiceActivityDetector:
    """Feed 16 kHz mono float32 audio of any length; get speech start/end events back."""

    def __init__(self, config: VadConfig | None = None, *, start_s: float = 0.0) -> None:
        self.config = config or VadConfig()
        self._classifier = make_classifier(self.config)
        self._n = self._classifier.frame_samples
        self._frame_s = self._n / VAD_RATE
        self._start_frames = max(1, round(self.config.start_ms / 1000 / self._frame_s))
        self._end_frames = max(1, round(self.config.end_ms / 1000 / self._frame_s))
        self._min_rms = 10 ** (self.config.min_rms_dbfs / 20)
        self._pending = np.zeros(0, np.float32)
        self._t = start_s  # audio-timeline time of the start of `_pending`
        self._recent: deque[bool] = deque(maxlen=max(self._start_frames, self._end_frames))
        self.speaking = False
        self.probability = 0.0
        self._last_voiced_end = start_s

    def process(self, audio: np.ndarray) -> list[VadEvent]:
        self._pending = np.concatenate([self._pending, np.asarray(audio, np.float32).reshape(-1)])
        events: list[VadEvent] = []
        while len(self._pending) >= self._n:
            frame, self._pending = self._pending[: self._n], self._pending[self._n :]
            event = self._classify(frame, self._t)
            self._t += self._frame_s
            if event:
                events.append(event)
        return events

    @property
    def position_s(self) -> float:
        """Audio-timeline time up to which audio has been classified."""
        return self._t

    def _classify(self, frame: np.ndarray, t: float) -> VadEvent | None:
        rms = float(np.sqrt(np.mean(frame * frame)))
        prob = self._classifier.probability(frame) if rms >= self._min_rms else 0.0
        self.probability = prob
        voiced = prob >= (self.config.silero_threshold if self.config.backend == "silero" else 0.5)
        self._recent.append(voiced)
        if voiced:
            self._last_voiced_end = t + self._frame_s
        recent = list(self._recent)
        if (
            not self.speaking
            and len(recent) >= self._start_frames
            and all(recent[-self._start_frames :])
        ):
            self.speaking = True
            return VadEvent("start", t + self._frame_s - self._start_frames * self._frame_s)
        if (
            self.speaking
            and len(recent) >= self._end_frames
            and not any(recent[-self._end_frames :])
        ):
            self.speaking = False
            return VadEvent("end", self._last_voiced_end)
        return None

    def reset(self) -> None:
        self._recent.clear()
        self.speaking = False
