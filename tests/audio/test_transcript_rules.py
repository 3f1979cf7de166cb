"""The drop rules both recognizers share (embedded and remote)."""

from __future__ import annotations

import numpy as np
import pytest

from cadence.audio.asr import AsrOptions
from cadence.audio.http_asr import HttpAsrOptions
from cadence.audio.transcript_rules import SAMPLE_RATE, checked_utterance, why_drop
from cadence.errors import InputError, LimitExceeded

T = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
TONE = (0.2 * np.sin(2 * np.pi * 220 * T)).astype(np.float32)  # level flat: not speech
# Noise whose level rises and falls four times a second, as syllables do.
LEVEL = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * T)
SYLLABLES = (np.random.default_rng(1).standard_normal(len(T)) * 0.1 * LEVEL).astype(np.float32)
QUIET = (TONE * 10 ** (-50 / 20)).astype(np.float32)

OPTIONS = [AsrOptions(), HttpAsrOptions(url="http://127.0.0.1:1/v1", model="whisper")]


@pytest.mark.parametrize("o", OPTIONS, ids=["embedded", "remote"])
def test_the_same_rules_serve_both_recognizers(o: AsrOptions | HttpAsrOptions) -> None:
    assert why_drop(" ... ", 0.0, 0.0, SYLLABLES, o) == "empty"
    assert why_drop("What time is it?", 0.7, -1.5, SYLLABLES, o) == "no_speech"
    assert why_drop("What time is it?", 0.1, -0.3, SYLLABLES, o) is None
    # Unsure words over a tone are invented; sure ones are kept (a caller with a hum).
    assert why_drop("I like turtles.", 0.1, -1.2, TONE, o) == "non_speech"
    assert why_drop("I like turtles.", 0.1, -0.2, TONE, o) is None
    # A phantom phrase needs other evidence: kept when spoken, dropped on a quiet tone.
    assert why_drop("Thank you.", 0.1, -0.3, SYLLABLES, o) is None
    assert why_drop("Thank you.", 0.0, 0.0, QUIET, o) == "phantom"


def test_a_remote_engine_without_scores_keeps_words_over_a_tone() -> None:
    """Plain `json` has no scores (0, 0): only the level rules can act, never a guess."""
    o = OPTIONS[1]
    assert why_drop("I like turtles.", 0.0, 0.0, TONE, o) is None
    assert why_drop("Thank you.", 0.0, 0.0, TONE, o) == "phantom"


def test_the_input_check_is_shared_too() -> None:
    audio, seconds = checked_utterance(np.full((SAMPLE_RATE, 1), np.nan, np.float32), 5.0)
    assert audio.shape == (SAMPLE_RATE,) and seconds == 1.0 and not np.isnan(audio).any()
    with pytest.raises(LimitExceeded, match=r"max_utterance_s=0\.5"):
        checked_utterance(TONE, 0.5)
    with pytest.raises(InputError, match="float audio"):
        checked_utterance(np.zeros(100, np.int16), 5.0)
