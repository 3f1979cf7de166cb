"""The rule-based end-of-turn scorer and the adaptive silence threshold, standalone."""

from __future__ import annotations

import pytest

from cadence.agent.endpointing import (
    EndpointConfig,
    Endpointer,
    is_backchannel,
    normalize,
    semantic_score,
)
from cadence.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "low", "high"),
    [
        ("What is the capital of France?", 0.9, 1.0),
        ("Where?", 0.45, 0.55),  # a lone question word: maybe more is coming
        ("Where is it?", 0.9, 1.0),
        ("Tell me about Rome.", 0.8, 0.9),
        ("Thanks!", 0.8, 0.9),
        ("yes", 0.7, 0.8),
        ("what is the weather in paris", 0.65, 0.75),
        ("i like pizza", 0.45, 0.55),
        ("I was wondering um", 0.0, 0.1),
        ("So, uh", 0.0, 0.1),
        ("I want to visit Rome and", 0.05, 0.15),
        ("because", 0.05, 0.15),
        ("What is the capital of", 0.1, 0.2),
        ("I want to", 0.1, 0.2),
        ("Tell me about the", 0.1, 0.2),
        ("My favourite cities are Rome,", 0.1, 0.2),
        ("Well...", 0.1, 0.2),
        ("The capital of.", 0.1, 0.2),  # a recogniser's period does not finish a phrase
        ("How many legs does a spider have?", 0.9, 1.0),  # questions end on verbs
        ("What is it made of?", 0.9, 1.0),
        ("Can you tell me the?", 0.1, 0.2),  # an article never ends one
        ("", 0.0, 0.0),
        ("   ...", 0.0, 0.0),
    ],
)
def test_semantic_score(text: str, low: float, high: float) -> None:
    assert low <= semantic_score(text) <= high


def test_complete_texts_outscore_unfinished_ones() -> None:
    finished = ["Where is Rome?", "I live in Paris.", "Stop!"]
    unfinished = ["I live in", "Rome and", "um", "the capital of"]
    assert min(map(semantic_score, finished)) > max(map(semantic_score, unfinished))


@pytest.mark.parametrize(
    "text",
    ["Mm-hmm.", "mhm", "Yeah.", "yeah yeah", "Right.", "Okay.", "Uh-huh.", "I see.", "Got it.",
     "Oh wow.", "Makes sense.", "Sure, sure.", "", "hmm", "All right."],
)  # fmt: skip
def test_backchannels(text: str) -> None:
    assert is_backchannel(text)


@pytest.mark.parametrize(
    "text",
    ["Stop.", "Wait.", "No.", "Yeah but what about Rome?", "Okay stop.", "Hold on.",
     "yeah yeah yeah yeah yeah", "I see it now", "Right, so the thing is"],
)  # fmt: skip
def test_not_backchannels(text: str) -> None:
    assert not is_backchannel(text)


def test_normalize_ignores_case_and_punctuation() -> None:
    assert normalize("What is the Capital of France?") == normalize("what is the capital of france")
    assert normalize("Mm-hmm, it's fine.") == "mm-hmm it's fine"
    assert normalize("Tell me about Rome.") != normalize("Tell me about Rome and")


def test_threshold_is_short_after_a_question_and_long_after_fillers() -> None:
    ep = Endpointer()
    assert ep.silence_threshold_ms("What is the capital of France?") == 160.0
    assert ep.silence_threshold_ms("Tell me about Rome.") == 160.0
    assert ep.silence_threshold_ms("I was wondering um") == 1200.0
    assert ep.silence_threshold_ms("Rome and") == 1200.0
    assert 1000 < ep.silence_threshold_ms("What is the capital of") < 1200
    assert 500 < ep.silence_threshold_ms("i like pizza") < 800


def test_is_end_of_turn_needs_words_and_enough_silence() -> None:
    ep = Endpointer()
    assert not ep.is_end_of_turn("", 5000)
    assert not ep.is_end_of_turn("Where is Rome?", 100)
    assert ep.is_end_of_turn("Where is Rome?", 160)
    assert not ep.is_end_of_turn("Where is Rome and", 900)


def test_prosody_blends_into_the_score() -> None:
    ep = Endpointer()
    assert ep.score("i like pizza", 1.0) > ep.score("i like pizza") > ep.score("i like pizza", 0.0)
    assert ep.score("i like pizza", 1.7) == ep.score("i like pizza")  # out of range: ignored
    assert ep.silence_threshold_ms("i like pizza", 1.0) < ep.silence_threshold_ms("i like pizza")
    # A falling tone cannot rescue a dangling preposition into a fast endpoint.
    assert ep.silence_threshold_ms("the capital of", 1.0) > 600


def test_speaker_adaptation_stretches_only_unfinished_waits() -> None:
    ep = Endpointer()
    mid, done = ep.silence_threshold_ms("i like pizza"), ep.silence_threshold_ms("Where is it?")
    for _ in range(10):
        ep.observe_pause(900.0)
    assert ep.typical_pause_ms > 800 and ep.speaker_factor == pytest.approx(1.6)
    assert ep.silence_threshold_ms("i like pizza") > mid * 1.4
    assert ep.silence_threshold_ms("Where is it?") == done
    for _ in range(30):
        ep.observe_pause(100.0)
    assert ep.speaker_factor == pytest.approx(0.75)
    assert ep.silence_threshold_ms("i like pizza") < mid


def test_bad_pauses_are_ignored() -> None:
    ep = Endpointer()
    for bad in (-5.0, 0.0, float("nan")):
        ep.observe_pause(bad)
    assert ep.typical_pause_ms == 300.0
    ep.observe_pause(1e9)  # capped
    assert ep.typical_pause_ms <= 300 * 0.75 + 2000 * 0.25


@pytest.mark.parametrize(
    "kwargs",
    [{"min_silence_ms": 0}, {"min_silence_ms": 900, "max_silence_ms": 800},
     {"complete_score": 0.1, "incomplete_score": 0.5}, {"prosody_weight": 2},
     {"speaker_factor_min": 1.2}],
)  # fmt: skip
def test_bad_config_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        EndpointConfig(**kwargs)  # type: ignore[arg-type]
