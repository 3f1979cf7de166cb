"""Tests for the synthesized test voices: format, determinism, SNR, and turn concatenation."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from cadence.audio.chunk import AudioChunk
from cadence.bench.voices import (
    SAMPLE_RATE,
    add_noise,
    concat_turns,
    make_noise,
    synthesize,
    voiced_mask,
)
from cadence.errors import ConfigError, InputError

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None,
    reason="espeak-ng is not installed (apt-get install espeak-ng)",
)


def _snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    mask = voiced_mask(clean)
    # synthesize() may peak-scale either clip: project out the clean part at its own gain.
    gain = float(np.dot(noisy, clean) / np.dot(clean, clean))
    clean = gain * clean
    noise = noisy - clean
    return float(10 * np.log10(np.mean(clean[mask] ** 2) / np.mean(noise[mask] ** 2)))


def test_pink_and_white_noise_are_unit_rms_and_seeded() -> None:
    for kind in ("white", "pink"):
        a = make_noise(16_000, kind, seed=3)
        assert a.dtype == np.float32
        assert np.sqrt(np.mean(a**2)) == pytest.approx(1.0, rel=1e-3)
        assert np.array_equal(a, make_noise(16_000, kind, seed=3))
        assert not np.array_equal(a, make_noise(16_000, kind, seed=4))
    # Pink noise puts more power in the low band than white noise does.
    spec = np.abs(np.fft.rfft(make_noise(16_000, "pink"))) ** 2
    assert spec[1:100].mean() > 10 * spec[4000:8000].mean()


def test_add_noise_hits_the_snr_over_the_voiced_part() -> None:
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    silence = np.zeros(SAMPLE_RATE, np.float32)
    clean = np.concatenate([silence, tone, silence])
    noisy = add_noise(clean, 10.0, kind="white", seed=1)
    assert _snr_db(clean, noisy) == pytest.approx(10.0, abs=0.3)
    with pytest.raises(InputError):
        add_noise(np.zeros(1000, np.float32), 10.0)


def test_concat_turns_records_spans() -> None:
    a = AudioChunk.from_array(np.full(8000, 0.1, np.float32), SAMPLE_RATE)
    b = AudioChunk.from_array(np.full(16000, 0.1, np.float32), SAMPLE_RATE)
    out = concat_turns([a, b, a], [1.0, 0.5])
    assert out.duration_s == pytest.approx(0.5 + 1.0 + 1.0 + 0.5 + 0.5)
    flat = [t for span in out.meta["turn_spans_s"] for t in span]
    assert flat == pytest.approx([0.0, 0.5, 1.5, 2.5, 3.0, 3.5])
    assert concat_turns([a, b], 0.25).duration_s == pytest.approx(1.75)
    with pytest.raises(ConfigError):
        concat_turns([a, b], [0.1, 0.2])


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ConfigError):
        synthesize("hello", "festival")
    with pytest.raises(ConfigError):
        synthesize("hello", speed=10.0)
    with pytest.raises(InputError):
        synthesize("   ")


@pytest.mark.models
def test_piper_is_16k_mono_deterministic_and_noisy_on_request() -> None:
    clean = synthesize("What is the capital of France?", lead_silence_s=0.3, tail_silence_s=0.6)
    assert (clean.sample_rate, clean.channels, clean.samples.dtype) == (16_000, 1, np.float32)
    assert 1.5 < clean.duration_s < 4.0
    assert np.all(clean.samples[: int(0.3 * SAMPLE_RATE)] == 0)
    assert clean.meta["speech_start_s"] == pytest.approx(0.3)
    assert np.array_equal(clean.samples, synthesize("What is the capital of France?").samples)
    fast = synthesize("What is the capital of France?", speed=1.5)
    assert fast.duration_s < clean.duration_s - 0.3
    noisy = synthesize("What is the capital of France?", snr_db=20, seed=7)
    again = synthesize("What is the capital of France?", snr_db=20, seed=7)
    assert np.array_equal(noisy.samples, again.samples)
    assert _snr_db(clean.mono_f32(), noisy.mono_f32()) == pytest.approx(20.0, abs=1.0)


@needs_espeak
def test_espeak_variants() -> None:
    a = synthesize("Turn on the lights.", "espeak")
    b = synthesize("Turn on the lights.", "espeak:en-us+f3", speed=1.5)
    assert a.sample_rate == b.sample_rate == SAMPLE_RATE
    assert b.duration_s < a.duration_s
    with pytest.raises(ConfigError):
        synthesize("hi", "espeak:--help")
