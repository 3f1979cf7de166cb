from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cadence.audio.chunk import AudioChunk
from cadence.audio.io import read_audio, write_audio
from cadence.errors import AudioFileError


@pytest.mark.parametrize(
    ("fmt", "rate", "channels"), [("wav", 8000, 2), ("flac", 44100, 1), ("ogg", 48000, 2)]
)
def test_any_format_rate_and_layout_reads(tmp_path: Path, fmt: str, rate: int, channels: int):
    data = (0.1 * np.random.default_rng(0).standard_normal((rate // 2, channels))).astype(
        np.float32
    )
    path = tmp_path / f"x.{fmt}"
    sf.write(str(path), data, rate)
    chunk = read_audio(path)
    assert (chunk.sample_rate, chunk.channels) == (rate, channels)
    assert chunk.duration_s == pytest.approx(0.5, abs=0.01)


def test_write_then_read_round_trips(tmp_path: Path):
    chunk = AudioChunk.from_array(np.linspace(-0.5, 0.5, 2400, dtype=np.float32), 24000)
    write_audio(tmp_path / "y.wav", chunk)
    back = read_audio(tmp_path / "y.wav")
    assert np.allclose(back.samples, chunk.samples, atol=1e-4)


def test_corrupt_empty_missing_and_too_long_files_are_refused(tmp_path: Path):
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunk")
    (tmp_path / "empty.wav").write_bytes(b"")
    sf.write(str(tmp_path / "silent0.wav"), np.zeros((0, 1), np.float32), 16000)
    sf.write(str(tmp_path / "long.wav"), np.zeros((16000 * 4, 1), np.float32), 16000)
    for name, match in [
        ("corrupt.wav", "not a readable audio file"),
        ("empty.wav", "not a readable audio file"),
        ("silent0.wav", "holds no audio"),
        ("missing.wav", "no such file"),
    ]:
        with pytest.raises(AudioFileError, match=match):
            read_audio(tmp_path / name)
    with pytest.raises(AudioFileError, match="over the 3 s limit"):
        read_audio(tmp_path / "long.wav", max_duration_s=3)
