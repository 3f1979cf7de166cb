"""Audio token accounting for audio-language models, known before the call, and the seam check.

Converts an `AudioPart` to the encoder's rate and plans long audio into the token budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from cadence.audio.chunk import AudioChunk
from cadence.errors import AudioFormatError, ConfigError
from cadence.llm.base import AudioPart

SAMPLE_RATE = 16_000
MIN_AUDIO_S = 0.1  # shorter audio yields no encoder frame at all; pad it with silence

Decision = Literal["fits", "padded", "chunked", "trimmed"]
Policy = Literal["chunk", "trim"]


@dataclass(frozen=True)
class AudioTokenSpec:
    """The feature extractor's geometry that fixes how many placeholder tokens audio costs.

    Whisper-style encoders (Qwen2-Audio, Qwen2.5-Omni): a mel frame every `hop_length`
    samples, at most `max_frames` per clip (30 s), then conv stride 2 and pooling stride 2.
    """

    sample_rate: int = SAMPLE_RATE
    hop_length: int = 160
    max_frames: int = 3_000

    @property
    def max_clip_samples(self) -> int:
        return self.hop_length * self.max_frames

    @property
    def max_clip_s(self) -> float:
        return self.max_clip_samples / self.sample_rate

    def frames(self, n_samples: int) -> int:
        """Mel frames the extractor marks valid: ceil(n / hop), capped at `max_frames`."""
        return min(math.ceil(n_samples / self.hop_length), self.max_frames)

    def tokens_for_frames(self, frames: int) -> int:
        """Conv stride 2 (`(L-1)//2+1`) then average pooling stride 2 (`(L-2)//2+1`)."""
        after_conv = (frames - 1) // 2 + 1
        return max(0, (after_conv - 2) // 2 + 1)

    def tokens(self, n_samples: int) -> int:
        """Placeholder tokens for one clip of `n_samples` at `sample_rate` (≈25 per second)."""
        return self.tokens_for_frames(self.frames(n_samples))

    @property
    def tokens_per_s(self) -> float:
        return self.tokens(self.sample_rate * 10) / 10.0


QWEN_AUDIO = AudioTokenSpec()


def qwen_audio_tokens(n_samples: int) -> int:
    """Qwen2-Audio / Qwen2.5-Omni: `L=min(ceil(n/160),3000)`, tokens `((L-1)//2+1-2)//2+1`."""
    return QWEN_AUDIO.tokens(n_samples)


def samples_at(part: AudioPart, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The seam: an `AudioPart` as 1-D float32 at `sample_rate`, resampled and checked.

    Raises `AudioFormatError` for bytes that are not whole float32 samples, non-finite
    values, or a rate the resampler refuses.
    """
    if len(part.pcm_f32) % 4:
        raise AudioFormatError(
            f"AudioPart holds {len(part.pcm_f32)} bytes, not a whole number of float32 samples"
        )
    raw = np.frombuffer(part.pcm_f32, dtype="<f4")
    if not np.isfinite(raw).all():
        raise AudioFormatError("AudioPart contains NaN or infinite samples")
    if part.sample_rate == sample_rate:
        out = raw.astype(np.float32)
    else:
        chunk = AudioChunk.from_array(raw, part.sample_rate).resample(sample_rate)
        out = chunk.mono_f32()
    expected = round(len(raw) * sample_rate / part.sample_rate)
    # soxr may differ from the exact ratio by a sample at the edges; more means a wrong rate
    if abs(len(out) - expected) > 1:
        raise AudioFormatError(
            f"resampling {len(raw)} samples {part.sample_rate}->{sample_rate} Hz gave {len(out)}, "
            f"expected {expected}"
        )
    return np.ascontiguousarray(out, dtype=np.float32)


def part_from_chunk(chunk: AudioChunk, spec: AudioTokenSpec = QWEN_AUDIO) -> AudioPart:
    """An `AudioPart` (16 kHz mono float32) from any chunk, with its token cost filled in."""
    mono = chunk.to(spec.sample_rate).mono_f32()
    return AudioPart(mono.astype("<f4").tobytes(), spec.sample_rate, spec.tokens(len(mono)))


@dataclass(frozen=True)
class AudioPlan:
    """What will be sent for one utterance, decided before the call and kept for metrics."""

    clips: tuple[np.ndarray, ...]  # each at most one encoder window (30 s)
    tokens: tuple[int, ...]  # predicted placeholder tokens per clip
    decision: Decision
    input_s: float
    kept_s: float
    note: str

    @property
    def total_tokens(self) -> int:
        return sum(self.tokens)


def _quiet_cut(x: np.ndarray, limit: int, search: int, hop: int) -> int:
    """A cut at or before `limit`: the quietest 10 ms frame in the last `search` samples."""
    start = max(hop, limit - search)
    frames = (limit - start) // hop
    if frames <= 1:
        return limit
    seg = x[start : start + frames * hop].reshape(frames, hop)
    return start + int(np.argmin(np.mean(seg**2, axis=1))) * hop + hop // 2


def plan_audio(
    samples: np.ndarray,
    spec: AudioTokenSpec = QWEN_AUDIO,
    *,
    max_tokens: int = 1_500,
    policy: Policy = "chunk",
) -> AudioPlan:
    """Fit one utterance into the encoder's 30 s windows and a per-turn token budget.

    "chunk" splits long audio at quiet frames into windows, keeping the most recent audio
    when the budget runs out (the end of a turn usually carries the question); "trim" keeps
    only the last window. Audio shorter than `MIN_AUDIO_S` is padded with silence.
    """
    if policy not in ("chunk", "trim"):
        raise ConfigError(f"audio policy {policy!r} is not 'chunk' or 'trim'")
    if max_tokens < spec.tokens(int(MIN_AUDIO_S * spec.sample_rate)):
        raise ConfigError(f"max audio tokens {max_tokens} cannot hold even {MIN_AUDIO_S} s")
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    input_s = len(x) / spec.sample_rate
    min_len = int(MIN_AUDIO_S * spec.sample_rate)
    if len(x) < min_len:
        clip = np.concatenate([x, np.zeros(min_len - len(x), np.float32)])
        note = f"padded {input_s:.3f} s to {MIN_AUDIO_S} s"
        return AudioPlan((clip,), (spec.tokens(min_len),), "padded", input_s, input_s, note)
    window = spec.max_clip_samples
    budget_samples = min(len(x), max_tokens * spec.sample_rate // max(1, round(spec.tokens_per_s)))
    if policy == "trim":
        budget_samples = min(budget_samples, window)
    # Drop the oldest audio first, then check the budget exactly (token math is not linear
    # at the window edges): shave a little more while it does not fit.
    keep = x[len(x) - budget_samples :]
    clips = _split(keep, spec)
    while sum(spec.tokens(len(c)) for c in clips) > max_tokens:
        keep = keep[spec.hop_length * 4 :]
        clips = _split(keep, spec)
    tokens = tuple(spec.tokens(len(c)) for c in clips)
    kept_s = len(keep) / spec.sample_rate
    if len(keep) < len(x):
        note = (
            f"kept the last {kept_s:.2f} s of {input_s:.2f} s "
            f"({sum(tokens)} tokens, budget {max_tokens}, policy {policy})"
        )
        return AudioPlan(tuple(clips), tokens, "trimmed", input_s, kept_s, note)
    if len(clips) > 1:
        note = f"split {input_s:.2f} s into {len(clips)} clips of at most {spec.max_clip_s:.0f} s"
        return AudioPlan(tuple(clips), tokens, "chunked", input_s, kept_s, note)
    return AudioPlan(tuple(clips), tokens, "fits", input_s, kept_s, f"{sum(tokens)} tokens")


def _split(x: np.ndarray, spec: AudioTokenSpec) -> list[np.ndarray]:
    window = spec.max_clip_samples
    min_len = int(MIN_AUDIO_S * spec.sample_rate)
    clips: list[np.ndarray] = []
    start = 0
    while len(x) - start > window:
        # never leave a remainder too short to yield a token
        limit = min(start + window, len(x) - min_len)
        cut = _quiet_cut(x, limit, 2 * spec.sample_rate, spec.hop_length)
        clips.append(x[start:cut])
        start = cut
    clips.append(x[start:])
    return clips
