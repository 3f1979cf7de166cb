"""`AudioChunk`: a piece of PCM audio that carries its own sample rate, layout and start time.

Conversions (dtype, channels, sample rate) happen here and nowhere else, so every seam in
the pipeline can assert what it receives instead of guessing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import soxr

from cadence.errors import AudioFormatError

MAX_CHANNELS = 8
SUPPORTED_RATES = range(4_000, 192_001)


def pcm16_to_float32(pcm: np.ndarray) -> np.ndarray:
    """int16 PCM to float32 in [-1, 1)."""
    if pcm.dtype != np.int16:
        raise AudioFormatError(f"expected int16 PCM, got {pcm.dtype}")
    return pcm.astype(np.float32) / 32768.0


def float32_to_pcm16(audio: np.ndarray) -> np.ndarray:
    """float32 in [-1, 1] to int16 PCM, clipping out-of-range samples and zeroing NaN/inf."""
    clean = np.nan_to_num(audio.astype(np.float32, copy=False), nan=0.0, posinf=1.0, neginf=-1.0)
    return (np.clip(clean, -1.0, 32767.0 / 32768.0) * 32768.0).astype(np.int16)


def _as_frames(samples: np.ndarray, channels: int | None) -> np.ndarray:
    """Return samples shaped (frames, channels), refusing layouts that are ambiguous."""
    if samples.ndim == 1:
        if channels in (None, 1):
            return samples.reshape(-1, 1)
        if samples.size % channels:
            raise AudioFormatError(
                f"{samples.size} interleaved samples do not divide into {channels} channels"
            )
        return samples.reshape(-1, channels)
    if samples.ndim != 2:
        raise AudioFormatError(f"audio must be 1-D or 2-D (frames, channels), got {samples.ndim}-D")
    frames, chans = samples.shape
    if channels is not None and chans != channels:
        if frames == channels and chans != channels:
            # (channels, frames) is the other common layout: transpose it, it is unambiguous.
            return samples.T.copy()
        raise AudioFormatError(f"audio has {chans} channels, expected {channels}")
    if chans > MAX_CHANNELS and frames <= MAX_CHANNELS:
        return samples.T.copy()
    if chans > MAX_CHANNELS:
        raise AudioFormatError(
            f"audio shape {samples.shape} is ambiguous: more than {MAX_CHANNELS} channels"
        )
    return samples


@dataclass(frozen=True)
class AudioChunk:
    """PCM audio shaped (frames, channels), float32 in [-1, 1] or int16, with its timing."""

    samples: np.ndarray
    sample_rate: int
    start_s: float = 0.0
    meta: dict[str, object] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.sample_rate not in SUPPORTED_RATES:
            raise AudioFormatError(
                f"sample rate {self.sample_rate} Hz is outside 4000-192000 Hz; resample first"
            )
        if self.samples.dtype not in (np.float32, np.int16):
            raise AudioFormatError(
                f"audio dtype {self.samples.dtype} is not supported; use AudioChunk.from_array"
            )
        if self.samples.ndim != 2 or not 1 <= self.samples.shape[1] <= MAX_CHANNELS:
            raise AudioFormatError(
                f"samples must be (frames, 1..{MAX_CHANNELS}), got {self.samples.shape}"
            )

    @classmethod
    def from_array(
        cls,
        samples: np.ndarray,
        sample_rate: int,
        *,
        channels: int | None = None,
        start_s: float = 0.0,
    ) -> AudioChunk:
        """Build a chunk from any numeric array, converting dtype and layout when unambiguous.

        int16 stays int16; other integer types are scaled to float32; floats become float32
        with NaN/inf zeroed. A 1-D array is mono unless `channels` says it is interleaved.
        """
        arr = np.asarray(samples)
        if arr.dtype == np.int16:
            data = arr
        elif np.issubdtype(arr.dtype, np.integer):
            info = np.iinfo(arr.dtype)
            # signed PCM spans [min, max]; unsigned PCM (8-bit WAV) is offset by half its range
            offset = 0.0 if info.min < 0 else (info.max + 1) / 2.0
            scale = float(-info.min) if info.min < 0 else offset
            data = ((arr.astype(np.float64) - offset) / scale).astype(np.float32)
        elif np.issubdtype(arr.dtype, np.floating):
            data = np.nan_to_num(arr.astype(np.float32), nan=0.0, posinf=1.0, neginf=-1.0)
        else:
            raise AudioFormatError(f"audio dtype {arr.dtype} cannot be read as PCM")
        return cls(_as_frames(data, channels), int(sample_rate), start_s)

    @classmethod
    def from_pcm16_bytes(
        cls, data: bytes, sample_rate: int, *, channels: int = 1, start_s: float = 0.0
    ) -> AudioChunk:
        """Little-endian int16 interleaved PCM bytes, as WebRTC and the Realtime API send."""
        if len(data) % (2 * channels):
            raise AudioFormatError(
                f"{len(data)} bytes is not a whole number of {channels}-channel 16-bit frames"
            )
        pcm = np.frombuffer(data, dtype="<i2").astype(np.int16)
        return cls(pcm.reshape(-1, channels), sample_rate, start_s)

    @classmethod
    def silence(cls, duration_s: float, sample_rate: int, *, start_s: float = 0.0) -> AudioChunk:
        frames = round(duration_s * sample_rate)
        return cls(np.zeros((frames, 1), np.float32), sample_rate, start_s)

    @property
    def channels(self) -> int:
        return int(self.samples.shape[1])

    @property
    def frames(self) -> int:
        return int(self.samples.shape[0])

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s

    def mono(self) -> AudioChunk:
        """Average the channels (in float32, so int16 input does not overflow)."""
        if self.channels == 1:
            return self
        mixed = self.float32().samples.mean(axis=1, keepdims=True, dtype=np.float32)
        out = mixed if self.samples.dtype == np.float32 else float32_to_pcm16(mixed)
        return AudioChunk(out, self.sample_rate, self.start_s)

    def float32(self) -> AudioChunk:
        if self.samples.dtype == np.float32:
            return self
        return AudioChunk(pcm16_to_float32(self.samples), self.sample_rate, self.start_s)

    def pcm16(self) -> AudioChunk:
        if self.samples.dtype == np.int16:
            return self
        return AudioChunk(float32_to_pcm16(self.samples), self.sample_rate, self.start_s)

    def resample(self, sample_rate: int) -> AudioChunk:
        """Resample with soxr (one-shot; use `StreamResampler` for a continuous stream)."""
        if sample_rate == self.sample_rate:
            return self
        src = self.float32().samples
        out = soxr.resample(src, self.sample_rate, sample_rate, quality="HQ").astype(np.float32)
        chunk = AudioChunk(out.reshape(-1, self.channels), sample_rate, self.start_s)
        return chunk if self.samples.dtype == np.float32 else chunk.pcm16()

    def to(self, sample_rate: int, *, mono: bool = True, dtype: str = "float32") -> AudioChunk:
        """The one conversion every consumer needs: rate, channel count and dtype at once."""
        chunk = self.mono() if mono else self
        chunk = chunk.resample(sample_rate)
        return chunk.float32() if dtype == "float32" else chunk.pcm16()

    def mono_f32(self) -> np.ndarray:
        """A 1-D float32 view of a mono chunk (the shape most models want)."""
        if self.channels != 1:
            raise AudioFormatError("mono_f32() needs a mono chunk; call .mono() first")
        return self.float32().samples[:, 0]

    def to_pcm16_bytes(self) -> bytes:
        return self.pcm16().samples.astype("<i2").tobytes()

    def slice_s(self, start_s: float, end_s: float) -> AudioChunk:
        """The part between two times on this chunk's own timeline (absolute seconds)."""
        a = max(0, round((start_s - self.start_s) * self.sample_rate))
        b = min(self.frames, round((end_s - self.start_s) * self.sample_rate))
        return AudioChunk(
            self.samples[a : max(a, b)], self.sample_rate, self.start_s + a / self.sample_rate
        )

    @staticmethod
    def concat(chunks: list[AudioChunk]) -> AudioChunk:
        if not chunks:
            raise AudioFormatError("cannot concatenate zero chunks")
        first = chunks[0]
        for c in chunks[1:]:
            if (c.sample_rate, c.channels, c.samples.dtype) != (
                first.sample_rate,
                first.channels,
                first.samples.dtype,
            ):
                raise AudioFormatError("chunks to concatenate must share rate, channels and dtype")
        return AudioChunk(
            np.concatenate([c.samples for c in chunks]), first.sample_rate, first.start_s
        )


class StreamResampler:
    """Stateful soxr resampler for a continuous mono float32 stream (no seams at chunk edges)."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._stream = (
            None
            if in_rate == out_rate
            else soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32")
        )

    def process(self, audio: np.ndarray, *, last: bool = False) -> np.ndarray:
        mono = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
        if self._stream is None:
            return mono
        return np.asarray(self._stream.resample_chunk(mono, last=last), dtype=np.float32)
