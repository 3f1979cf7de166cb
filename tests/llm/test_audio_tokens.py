"""Audio token accounting, the seam conversion and long-utterance planning (no model needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cadence.audio.chunk import AudioChunk
from cadence.errors import AudioFormatError, ConfigError
from cadence.llm.audio_tokens import (
    QWEN_AUDIO,
    AudioTokenSpec,
    part_from_chunk,
    plan_audio,
    qwen_audio_tokens,
    samples_at,
)
from cadence.llm.base import AudioPart


def _reference(n: int) -> int:
    """The formula as MODELS.md states it."""
    frames = min(math.ceil(n / 160), 3000)
    return ((frames - 1) // 2 + 1 - 2) // 2 + 1


@given(st.integers(min_value=1_600, max_value=40 * 16_000))
def test_formula_matches_the_stated_one(n: int) -> None:
    assert qwen_audio_tokens(n) == _reference(n)


def test_known_values_and_rate() -> None:
    assert qwen_audio_tokens(16_000) == 25
    assert qwen_audio_tokens(48_077) == 75
    assert qwen_audio_tokens(30 * 16_000) == qwen_audio_tokens(90 * 16_000) == 750
    assert QWEN_AUDIO.tokens_per_s == 25.0
    assert AudioTokenSpec(hop_length=320).tokens(16_000) == 12  # L=50 → 25 → 12


def test_seam_resamples_and_refuses_garbage() -> None:
    x = np.sin(np.linspace(0, 100, 44_100)).astype("<f4")
    out = samples_at(AudioPart(x.tobytes(), 44_100))
    assert out.dtype == np.float32 and abs(len(out) - 16_000) <= 1
    with pytest.raises(AudioFormatError):
        samples_at(AudioPart(b"\x00" * 5))
    with pytest.raises(AudioFormatError):
        samples_at(AudioPart(np.array([np.nan], "<f4").tobytes()))


def test_part_from_chunk_fills_in_the_cost() -> None:
    chunk = AudioChunk.from_array(np.zeros((48_000, 2), np.int16), 48_000)
    part = part_from_chunk(chunk)
    assert part.sample_rate == 16_000 and part.tokens == 25
    assert len(part.pcm_f32) == 16_000 * 4


def test_plan_decisions() -> None:
    rng = np.random.default_rng(0)
    short = plan_audio(np.zeros(400, np.float32))
    assert short.decision == "padded" and short.tokens[0] > 0
    fits = plan_audio(rng.standard_normal(5 * 16_000).astype(np.float32))
    assert fits.decision == "fits" and fits.total_tokens == 125
    long = rng.standard_normal(75 * 16_000).astype(np.float32)
    long[30 * 16_000 : 30 * 16_000 + 1_600] = 0.0  # a pause to cut at
    chunked = plan_audio(long[: 45 * 16_000])
    assert chunked.decision == "chunked" and len(chunked.clips) == 2
    assert all(len(c) <= QWEN_AUDIO.max_clip_samples for c in chunked.clips)
    assert sum(len(c) for c in chunked.clips) == 45 * 16_000  # nothing lost
    trimmed = plan_audio(long, max_tokens=1_000)
    assert trimmed.decision == "trimmed" and trimmed.total_tokens <= 1_000
    kept = np.concatenate(trimmed.clips)
    assert np.array_equal(kept, long[-len(kept) :])  # the newest audio, in order
    assert "kept the last" in trimmed.note
    one = plan_audio(long, policy="trim")
    assert one.decision == "trimmed" and len(one.clips) == 1 and one.total_tokens == 750
    with pytest.raises(ConfigError):
        plan_audio(long, policy="drop")
