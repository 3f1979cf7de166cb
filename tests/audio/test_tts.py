"""Piper TTS: options, the bound on syntheses at once, and real speech from several threads."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from cadence.audio.tts import (
    WARM_SLOTS,
    PiperTTS,
    TtsOptions,
    _BoundedSession,
    _longest_piece,
)
from cadence.errors import ConfigError
from cadence.llm.chunker import ChunkerOptions


class _CountingSession:
    """Stands in for an ONNX session: records how many runs overlap."""

    def __init__(self) -> None:
        self.inside = 0
        self.most_inside = 0
        self._lock = threading.Lock()

    def run(self, output_names: Any, input_feed: Any) -> list[Any]:
        with self._lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        time.sleep(0.02)
        with self._lock:
            self.inside -= 1
        return [input_feed["x"]]

    def get_inputs(self) -> list[str]:
        return ["x"]


@pytest.mark.parametrize("parallel", [1, 2, 3])
def test_no_more_sentences_run_at_once_than_the_bound(parallel: int) -> None:
    inner = _CountingSession()
    bounded = _BoundedSession(inner, parallel)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: bounded.run(None, {"x": i}), range(24)))
    assert results == [[i] for i in range(24)]  # every run ran, with its own input
    assert inner.most_inside == parallel
    assert bounded.get_inputs() == ["x"]  # anything else Piper reads passes through


def test_a_failed_run_frees_its_slot() -> None:
    class Failing(_CountingSession):
        def run(self, output_names: Any, input_feed: Any) -> list[Any]:
            raise RuntimeError("onnx failed")

    bounded = _BoundedSession(Failing(), 1)
    for _ in range(3):  # with the slot kept, the second call would wait forever
        with pytest.raises(RuntimeError, match="onnx failed"):
            bounded.run(None, {"x": 1})


def test_options_refuse_a_negative_bound_and_default_to_the_cores() -> None:
    with pytest.raises(ConfigError, match="max_parallel"):
        TtsOptions(max_parallel=-1)
    assert TtsOptions(max_parallel=3).parallel_syntheses() == 3
    assert 1 <= TtsOptions().parallel_syntheses() <= 8


def test_sentences_from_several_threads_are_each_spoken_whole() -> None:
    tts = PiperTTS(TtsOptions(max_parallel=2))
    texts = [
        "Good morning.",
        "The train to the coast leaves at a quarter past nine, from platform four.",
        "Seven.",
        "Please hold while I look that up; it should only take a moment or two.",
    ]
    alone = {text: tts.synthesize(text).size for text in texts}
    with ThreadPoolExecutor(4) as pool:
        together = dict(zip(texts, pool.map(tts.synthesize, texts), strict=True))
    for text, audio in together.items():
        # Piper's durations carry noise: the same text comes out within ~25 % in length.
        assert audio.dtype == np.float32 and np.isfinite(audio).all()
        assert 0.75 * alone[text] <= audio.size <= 1.25 * alone[text], text
        assert np.abs(audio).max() > 0.05, text


def test_the_warm_up_speaks_the_longest_piece_in_up_to_two_slots_at_once() -> None:
    tts = PiperTTS(TtsOptions(max_parallel=4))
    piece = _longest_piece()
    assert ChunkerOptions().max_chars - 20 <= len(piece) <= ChunkerOptions().max_chars
    assert len(tts._voice.phonemize(piece)) == 1  # one ONNX run: the largest tensors there are
    bounded = tts._voice.session
    real = bounded._session
    overlap = _CountingSession()

    class Watched:
        def run(self, output_names: Any, input_feed: Any) -> list[Any]:
            overlap.run(None, {"x": None})  # counts the overlap, sleeping a little
            return real.run(output_names, input_feed)

    bounded._session = Watched()
    tts.warm()
    assert overlap.most_inside == WARM_SLOTS == 2
    assert tts.synthesize("Ready.").size > 0
