"""Audio files in and out with soundfile: any rate and channel count in, clear errors out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from cadence.audio.chunk import AudioChunk
from cadence.errors import AudioFileError, AudioFormatError

DEFAULT_MAX_DURATION_S = 300.0


def read_audio(path: str | Path, *, max_duration_s: float = DEFAULT_MAX_DURATION_S) -> AudioChunk:
    """Read WAV/FLAC/OGG (anything libsndfile reads) as a float32 chunk, refusing bad files."""
    p = Path(path)
    if not p.is_file():
        raise AudioFileError(f"{p}: no such file")
    try:
        info = sf.info(str(p))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise AudioFileError(f"{p}: not a readable audio file ({exc})") from None
    if info.frames <= 0 or info.samplerate <= 0:
        raise AudioFileError(f"{p}: the file holds no audio")
    duration = info.frames / info.samplerate
    if duration > max_duration_s:
        raise AudioFileError(
            f"{p}: {duration:.0f} s of audio is over the {max_duration_s:.0f} s limit "
            "(raise it with --max-seconds)"
        )
    try:
        data, rate = sf.read(str(p), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        raise AudioFileError(f"{p}: audio data is corrupt ({exc})") from None
    if data.shape[0] == 0:
        raise AudioFileError(f"{p}: the file holds no audio")
    try:
        return AudioChunk.from_array(data, int(rate), channels=data.shape[1])
    except AudioFormatError as exc:
        raise AudioFileError(f"{p}: {exc.message}") from None


def write_audio(path: str | Path, chunk: AudioChunk) -> None:
    """Write a chunk as 16-bit PCM (WAV, FLAC or OGG by the file's extension)."""
    sf.write(str(path), chunk.pcm16().samples, chunk.sample_rate, subtype="PCM_16")


def read_mono(path: str | Path, sample_rate: int, **kw: float) -> np.ndarray:
    """Convenience: a file as 1-D float32 mono at `sample_rate`."""
    return read_audio(path, **kw).to(sample_rate).mono_f32()
