"""The prosody encoder on synthesized speech: intonation, rate, hesitation, end of turn."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from cadence.agent.events import ProsodyCue
from cadence.audio.chunk import AudioChunk
from cadence.audio.prosody import (
    ProsodyFeatures,
    analyze_prosody,
    endpoint_silence_ms,
    track_prosody,
)
from cadence.bench.voices import concat_turns, synthesize

SR = 16_000
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
ESPEAK = ["espeak", "espeak:en-us+f3"]  # a male and a female voice, ~100 and ~200 Hz


def vowel(f0_start: float, f0_end: float, seconds: float, *, syllables: int = 1,
          level: float = 0.3, seed: int = 0) -> np.ndarray:
    """A harmonic /ʌ/ with an exponential F0 glide and `syllables` loudness bumps."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    f0 = np.geomspace(f0_start, f0_end, n) * (1 + 0.002 * rng.standard_normal(n))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    out = np.zeros(n)
    for k in range(1, 40):
        fk = k * f0
        formants = (np.exp(-(((fk - 640) / 180) ** 2)) + 0.6 * np.exp(-(((fk - 1190) / 220) ** 2))
                    + 0.25 * np.exp(-(((fk - 2390) / 300) ** 2)) + 0.05)
        out += np.where(fk < 7_000, formants / np.sqrt(k), 0.0) * np.sin(k * phase)
    env = np.ones(n)
    if syllables > 1:
        env = 0.35 + 0.65 * np.sin(np.pi * np.arange(n) / n * syllables) ** 2
    ramp = int(0.03 * SR)
    env[:ramp] *= np.linspace(0, 1, ramp)
    env[-ramp:] *= np.linspace(1, 0, ramp)
    return (level * out * env / np.abs(out).max()).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SR), np.float32)


def glide(end_hz: float) -> np.ndarray:
    body = vowel(110, 105, 1.2, syllables=6)
    return np.concatenate([silence(0.3), body, vowel(105, end_hz, 0.45, syllables=2), silence(0.6)])


def test_synthetic_glides_rise_fall_and_stay_level() -> None:
    rising, falling, level = (analyze_prosody(glide(hz)) for hz in (150, 75, 105))
    assert rising.final_contour == "rising" and rising.final_delta_st > 3
    assert falling.final_contour == "falling" and falling.final_delta_st < -3
    assert level.final_contour == "flat" and abs(level.final_delta_st) < 1
    assert rising.to_hint().startswith("question intonation")
    assert falling.to_hint().startswith("falling intonation")
    ends = min(rising.end_of_turn_score(), falling.end_of_turn_score())
    assert level.end_of_turn_score() < 0.5 < ends
    assert 100 < rising.f0_median_hz < 115


@needs_espeak
@pytest.mark.parametrize("voice", ESPEAK)
@pytest.mark.parametrize("snr_db", [None, 20.0])
def test_question_rises_and_statement_falls(voice: str, snr_db: float | None) -> None:
    question = analyze_prosody(synthesize("Do you like coffee?", voice, snr_db=snr_db))
    statement = analyze_prosody(synthesize("I like coffee.", voice, snr_db=snr_db))
    assert question.final_contour == "rising", question
    assert statement.final_contour == "falling", statement
    assert question.final_delta_st - statement.final_delta_st > 2.5
    assert question.final_level_st - statement.final_level_st > 2  # statements end low
    assert "question intonation" in question.to_hint()


@pytest.mark.parametrize("voice", ["piper", pytest.param("espeak", marks=needs_espeak)])
def test_fast_speech_has_a_higher_rate_than_slow(voice: str) -> None:
    text = "The quick brown fox jumps over the lazy dog near the river bank."
    slow = analyze_prosody(synthesize(text, voice, speed=0.7))
    fast = analyze_prosody(synthesize(text, voice, speed=1.5))
    assert fast.syllables_per_s > 1.3 * slow.syllables_per_s
    assert abs(fast.syllables - slow.syllables) <= 4  # the same words, counted alike
    if voice == "espeak":
        assert slow.rate == "slow" and "slow" in slow.to_hint()
        assert fast.rate == "fast" and "fast" in fast.to_hint()


@pytest.mark.parametrize("voice", ["piper", pytest.param("espeak", marks=needs_espeak)])
def test_hesitation_from_inserted_pauses(voice: str) -> None:
    words = [
        synthesize(w, voice, lead_silence_s=0, tail_silence_s=0) for w in ("Um", "I think", "maybe")
    ]
    hesitant = analyze_prosody(concat_turns(words, [0.7, 0.8]).to(SR))
    fluent = analyze_prosody(synthesize("I think maybe.", voice))
    assert hesitant.pause_count == 2 and hesitant.longest_pause_ms >= 650
    assert hesitant.hesitation >= 0.5 and "hesitant" in hesitant.to_hint()
    assert "long pauses" in hesitant.to_hint()
    assert fluent.hesitation < 0.3 and fluent.pause_count == 0
    assert hesitant.end_of_turn_score() < fluent.end_of_turn_score()


@pytest.mark.parametrize("voice", ["piper", pytest.param("espeak", marks=needs_espeak)])
def test_trailing_filler_says_the_turn_is_not_over(voice: str) -> None:
    done = synthesize("So I was thinking.", voice)
    speaker_hz = analyze_prosody(done).f0_median_hz
    lead = synthesize("So I was thinking", voice, tail_silence_s=0.05).mono_f32()
    uh = vowel(speaker_hz, speaker_hz * 0.98, 0.7, level=0.2)  # a level, sustained "uh"
    trailing = analyze_prosody(np.concatenate([lead, uh, silence(0.6)]))
    assert trailing.trailing_filler and trailing.filled_pauses >= 1
    assert "trailing filler" in trailing.to_hint()
    assert trailing.end_of_turn_score() < 0.2 < 0.8 < analyze_prosody(done).end_of_turn_score()


def _cut_mid_phrase(voice: str) -> tuple[AudioChunk, AudioChunk]:
    """The full sentence, and the same audio stopped at a word gap a third of the way in."""
    full = synthesize("I would like to book a flight to Paris tomorrow morning.", voice)
    x, energy = full.mono_f32(), track_prosody(full).energy_db
    start, end = full.meta["speech_start_s"], full.meta["speech_end_s"]
    i = int((start + 0.3 * (end - start)) * 100)
    j = i - 10 + int(np.argmin(energy[i - 10 : i + 10]))
    cut = np.concatenate([x[: j * 160], silence(0.6)])
    return full, AudioChunk.from_array(cut, SR)


@needs_espeak
@pytest.mark.parametrize("voice", ESPEAK)
def test_endpointing_scenario_prosody_changes_the_decision(voice: str) -> None:
    """450 ms of silence, a 600 ms base timeout: end the finished turn, wait on the cut one."""
    full, cut = _cut_mid_phrase(voice)
    finished, unfinished = analyze_prosody(full), analyze_prosody(cut)
    assert unfinished.final_contour == "flat"
    silence_ms, base_ms = 450.0, 600.0
    assert silence_ms < base_ms  # without prosody neither turn would end yet
    assert endpoint_silence_ms(finished.end_of_turn_score(), base_ms) < silence_ms
    assert endpoint_silence_ms(unfinished.end_of_turn_score(), base_ms) > base_ms


def test_cue_and_features_contract() -> None:
    features = analyze_prosody(glide(150))
    cue = features.to_cue(1234.0)
    assert isinstance(cue, ProsodyCue) and cue.t_ms == 1234.0
    assert cue.end_of_turn == features.end_of_turn_score() and cue.hint == features.to_hint()
    with pytest.raises(AttributeError):
        features.hesitation = 1.0
    assert endpoint_silence_ms(0.5, 600) == 600 and endpoint_silence_ms(1.0, 600) == 300
    assert endpoint_silence_ms(0.0, 600) == 1200


def test_no_speech_gives_no_evidence() -> None:
    for audio in (silence(1.0), silence(0.01), np.random.default_rng(0).standard_normal(SR) * 1e-4):
        features = analyze_prosody(np.asarray(audio, np.float32))
        assert isinstance(features, ProsodyFeatures) and not features.has_speech
        assert features.to_hint() == "no clear speech" and features.end_of_turn_score() == 0.5
        assert features.to_cue(0.0) is None


def test_any_rate_and_layout_gives_the_same_answer() -> None:
    x = glide(150)
    at16 = analyze_prosody(x)
    stereo48 = AudioChunk.from_array(np.stack([x, x], axis=1), SR).resample(48_000)
    at48 = analyze_prosody(stereo48)
    assert at48.final_contour == at16.final_contour
    assert abs(at48.f0_median_hz - at16.f0_median_hz) < 2
