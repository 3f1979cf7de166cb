"""The whole voice loop with the real models: VAD, ASR, LLM, TTS — no fakes."""

from __future__ import annotations

import asyncio
import re

import jiwer
import numpy as np
import pytest

from cadence.agent.filetalk import talk_file
from cadence.agent.runtime import Runtime
from cadence.audio.chunk import AudioChunk
from cadence.bench.voices import synthesize

pytestmark = pytest.mark.models

QUESTIONS = [
    ("What is the capital of Italy?", "rome"),
    ("What color is the sky on a clear day?", "blue"),
    ("How many days are there in a week?", "seven|7"),
    ("What is the largest ocean on Earth?", "pacific"),
    ("Which planet do we live on?", "earth"),
    ("What do bees make?", "honey"),
]


def _words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]", " ", text.lower()).split())


def _conversation(voice: str, speed: float, snr_db: float | None) -> AudioChunk:
    parts = [
        synthesize(q, voice, speed=speed, snr_db=snr_db, seed=i, tail_silence_s=1.2)
        for i, (q, _) in enumerate(QUESTIONS)
    ]
    return AudioChunk.concat(parts)


async def test_capital_of_france_round_trip(runtime: Runtime) -> None:
    question = synthesize("What is the capital of France?", "piper")
    result = await talk_file(runtime, question)
    assert not result.errors
    assert len(result.turns) == 1
    turn = result.turns[0]
    assert "capital of france" in _words(turn.user)
    assert "paris" in _words(turn.reply)
    # The spoken reply, heard again by the ASR, says Paris too.
    spoken = result.reply_audio().to(16_000).mono_f32()
    heard = await asyncio.to_thread(runtime.asr.transcribe, spoken)
    assert "paris" in _words(heard.text)
    assert turn.latency["v2v"] is not None and turn.latency["endpoint"] is not None


@pytest.mark.parametrize(
    ("voice", "speed", "snr_db"),
    [("piper", 1.0, None), ("piper", 1.25, 20.0), ("espeak", 1.0, None), ("espeak", 1.25, 20.0)],
)
async def test_questions_across_voices_speeds_and_noise(
    runtime: Runtime, voice: str, speed: float, snr_db: float | None, record_property
) -> None:
    result = await talk_file(runtime, _conversation(voice, speed, snr_db))
    heard = [t.user for t in result.turns]
    refs = [q for q, _ in QUESTIONS]
    # Align turns to questions by order; a missed or merged turn counts as errors.
    hyps = (heard + [""] * len(refs))[: len(refs)]
    wer = jiwer.wer([_words(r) for r in refs], [_words(h) or "_" for h in hyps])
    correct = sum(
        bool(re.search(answer, _words(t.reply or t.generated)))
        for t, (_, answer) in zip(result.turns, QUESTIONS, strict=False)
    )
    label = f"{voice} speed={speed} snr={snr_db}"
    print(
        f"\n[voice loop] {label}: turns={len(result.turns)}/{len(refs)} "
        f"WER={wer:.1%} answers correct={correct}/{len(refs)}"
    )
    for t in result.turns:
        print(f"    heard {t.user!r} -> {t.reply!r}")
    record_property("wer", wer)
    assert len(result.turns) == len(refs), "every question gets exactly one reply"
    if voice == "piper":
        assert wer < 0.10


async def test_stereo_8khz_input_is_answered_like_any_other(runtime: Runtime) -> None:
    mono = synthesize("What is the capital of France?", "piper").resample(8000)
    stereo = AudioChunk(np.repeat(mono.samples, 2, axis=1), 8000)
    result = await talk_file(runtime, stereo)
    assert len(result.turns) == 1
    assert "paris" in _words(result.turns[0].reply)
