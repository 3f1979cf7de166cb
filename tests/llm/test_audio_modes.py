"""cascade / native / hybrid: what the model is sent and what the history keeps."""

from __future__ import annotations

import numpy as np
import pytest

from cadence.audio.chunk import AudioChunk
from cadence.errors import ConfigError, InputError
from cadence.llm.audio_modes import build_user_turn, prosody_line

AUDIO = AudioChunk.from_array(np.zeros(32_000, np.float32), 16_000)


def test_cascade_sends_text_with_the_prosody_line() -> None:
    turn = build_user_turn("cascade", transcript=" is it raining ", audio=AUDIO,
                           prosody="question intonation")
    assert turn.for_model.content == "is it raining\n[prosody: question intonation]"
    assert turn.for_model.audio == () and turn.for_history.content == "is it raining"
    with pytest.raises(InputError):
        build_user_turn("cascade", transcript="", audio=AUDIO)


def test_native_sends_audio_and_keeps_it() -> None:
    turn = build_user_turn("native", transcript=None, audio=AUDIO, prosody="hesitant")
    assert turn.for_model.content == "[prosody: hesitant]"
    (part,) = turn.for_model.audio
    assert part.sample_rate == 16_000 and part.tokens == 50
    assert turn.for_history.audio == (part,)


def test_hybrid_sends_audio_and_keeps_the_transcript() -> None:
    turn = build_user_turn("hybrid", transcript="hello there", audio=AUDIO)
    assert turn.for_model.audio and turn.for_model.content == ""
    assert turn.for_history.content == "hello there" and turn.for_history.audio == ()
    with pytest.raises(InputError):
        build_user_turn("hybrid", transcript="hi", audio=None)
    with pytest.raises(ConfigError):
        build_user_turn("speech", transcript="hi", audio=AUDIO)


def test_prosody_line_is_empty_without_a_hint() -> None:
    assert prosody_line(None) == "" and prosody_line("") == ""
