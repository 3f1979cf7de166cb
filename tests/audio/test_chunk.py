import numpy as np
import pytest

from cadence.audio.chunk import AudioChunk, StreamResampler, float32_to_pcm16, pcm16_to_float32
from cadence.errors import AudioFormatError


def tone(freq: float, seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_pcm16_float_round_trip_is_within_one_step():
    pcm = np.array([-32768, -1, 0, 1, 32767], np.int16)
    back = float32_to_pcm16(pcm16_to_float32(pcm))
    assert np.array_equal(back, pcm)


def test_float_to_pcm16_clips_and_zeroes_non_finite():
    out = float32_to_pcm16(np.array([2.0, -2.0, np.nan, np.inf, -np.inf], np.float32))
    assert out.tolist() == [32767, -32768, 0, 32767, -32768]


@pytest.mark.parametrize(
    ("src", "dst"), [(8000, 16000), (44100, 16000), (48000, 24000), (22050, 24000)]
)
def test_resample_keeps_duration_and_pitch(src: int, dst: int):
    chunk = AudioChunk.from_array(tone(440.0, 1.0, src), src)
    out = chunk.resample(dst)
    assert out.sample_rate == dst
    assert abs(out.duration_s - 1.0) < 0.002
    spectrum = np.abs(np.fft.rfft(out.samples[:, 0]))
    peak_hz = np.argmax(spectrum) * dst / out.frames
    assert abs(peak_hz - 440.0) < 2.0


def test_stream_resampler_matches_one_shot_without_seams():
    rate_in, rate_out = 48000, 16000
    x = tone(300.0, 0.5, rate_in)
    stream = StreamResampler(rate_in, rate_out)
    pieces = [stream.process(x[i : i + 960]) for i in range(0, len(x), 960)]
    pieces.append(stream.process(np.zeros(0, np.float32), last=True))
    streamed = np.concatenate(pieces)
    assert abs(len(streamed) - len(x) // 3) <= 2
    # a seam would show up as a jump far larger than the sine's own slope
    assert np.max(np.abs(np.diff(streamed[100:-100]))) < 0.1


def test_stereo_is_mixed_to_mono_without_int16_overflow():
    left = np.full(100, 30000, np.int16)
    stereo = np.stack([left, left], axis=1)
    mono = AudioChunk.from_array(stereo, 8000).mono()
    assert mono.channels == 1 and mono.samples.dtype == np.int16
    assert int(mono.samples[0, 0]) == 30000


def test_channels_first_layout_is_transposed_when_unambiguous():
    data = np.zeros((2, 1000), np.float32)
    chunk = AudioChunk.from_array(data, 16000)
    assert chunk.channels == 2 and chunk.frames == 1000


def test_interleaved_bytes_with_a_partial_frame_are_refused():
    with pytest.raises(AudioFormatError, match="whole number"):
        AudioChunk.from_pcm16_bytes(b"\x00\x01\x02", 24000)


def test_pcm16_bytes_round_trip():
    pcm = np.arange(-100, 100, dtype=np.int16)
    chunk = AudioChunk.from_pcm16_bytes(pcm.tobytes(), 24000)
    assert chunk.to_pcm16_bytes() == pcm.astype("<i2").tobytes()


@pytest.mark.parametrize("rate", [0, 100, 10_000_000])
def test_unusable_sample_rates_are_refused(rate: int):
    with pytest.raises(AudioFormatError, match="sample rate"):
        AudioChunk.from_array(np.zeros(10, np.float32), rate)


def test_unsigned_and_wide_integer_pcm_are_scaled():
    u8 = np.array([0, 128, 255], np.uint8)
    f = AudioChunk.from_array(u8, 8000).samples[:, 0]
    assert f[0] == pytest.approx(-1.0, abs=0.01) and f[1] == pytest.approx(0.0, abs=0.01)
    i32 = np.array([2**31 - 1], np.int32)
    assert AudioChunk.from_array(i32, 8000).samples[0, 0] == pytest.approx(1.0, abs=1e-6)


def test_non_numeric_and_3d_arrays_are_refused():
    with pytest.raises(AudioFormatError):
        AudioChunk.from_array(np.array(["a", "b"]), 16000)
    with pytest.raises(AudioFormatError):
        AudioChunk.from_array(np.zeros((2, 2, 2), np.float32), 16000)


def test_nan_audio_is_cleaned():
    chunk = AudioChunk.from_array(np.array([np.nan, 0.5], np.float32), 16000)
    assert np.isfinite(chunk.samples).all()


def test_to_converts_rate_channels_and_dtype_at_once():
    stereo = np.stack([tone(200, 0.1, 8000)] * 2, axis=1)
    out = AudioChunk.from_array(stereo, 8000).to(16000, dtype="int16")
    assert (out.sample_rate, out.channels, out.samples.dtype) == (16000, 1, np.int16)


def test_slice_and_concat():
    chunk = AudioChunk.from_array(tone(100, 1.0, 16000), 16000, start_s=10.0)
    part = chunk.slice_s(10.25, 10.75)
    assert part.start_s == pytest.approx(10.25) and part.duration_s == pytest.approx(0.5)
    whole = AudioChunk.concat([part, part])
    assert whole.duration_s == pytest.approx(1.0)
    with pytest.raises(AudioFormatError):
        AudioChunk.concat([part, part.resample(8000)])
