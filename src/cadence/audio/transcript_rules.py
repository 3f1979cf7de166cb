"""What every recognizer does around its model, embedded or remote: check the input, and
drop transcripts that Whisper-family models invent on silence, tones and noise."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from cadence.errors import InputError, LimitExceeded

SAMPLE_RATE = 16_000

# Phrases Whisper was trained to emit on silence/noise (from subtitle credits). Spoken on
# purpose they are real turns, so they are dropped only with other evidence of non-speech.
PHANTOM_PHRASES = frozenset(
    {
        "you", "thank you", "thanks", "thank you very much", "thanks for watching",
        "thank you for watching", "thanks for listening", "bye", "okay", "so", "oh",
        "please subscribe", "subscribe", "the end", "i m sorry", "hmm", "uh", "um",
    }
)  # fmt: skip


class DropThresholds(Protocol):
    """The recognizer options the drop rules read (AsrOptions, HttpAsrOptions)."""

    @property
    def no_speech_threshold(self) -> float: ...
    @property
    def log_prob_threshold(self) -> float: ...
    @property
    def phantom_no_speech_prob(self) -> float: ...
    @property
    def stationary_db(self) -> float: ...
    @property
    def confident_logprob(self) -> float: ...
    @property
    def min_speech_dbfs(self) -> float: ...


def as_mono_float(audio: np.ndarray) -> np.ndarray:
    """The one input check of every recognizer: 1-D float audio, NaN/inf zeroed."""
    arr = np.asarray(audio)
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise InputError(f"ASR needs 1-D mono audio, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise InputError(f"ASR needs float audio at 16 kHz, got {arr.dtype}; convert first")
    return np.nan_to_num(arr.astype(np.float32, copy=False), nan=0.0, posinf=1.0, neginf=-1.0)


def checked_utterance(audio: np.ndarray, max_utterance_s: float) -> tuple[np.ndarray, float]:
    """The utterance as 1-D float32 and its length in seconds; too long is LimitExceeded."""
    mono = as_mono_float(audio)
    duration = len(mono) / SAMPLE_RATE
    if duration > max_utterance_s:
        raise LimitExceeded(
            f"{duration:.1f} s utterance is over max_utterance_s={max_utterance_s}; "
            "segment the audio with VAD first"
        )
    return mono, duration


def normalize_words(text: str) -> str:
    """Lower-case words without punctuation, for comparing transcripts."""
    kept = "".join(c.lower() if c.isalnum() or c == "'" else " " for c in text)
    return " ".join(kept.replace("'", " ").split())


def frame_dbfs(audio: np.ndarray) -> np.ndarray:
    """RMS level of each 20 ms frame in dBFS."""
    frame = SAMPLE_RATE // 50
    n = max(1, len(audio) // frame)
    padded = np.zeros(n * frame, np.float32)
    padded[: min(len(audio), n * frame)] = audio[: n * frame]
    rms = np.sqrt(np.mean(padded.reshape(n, frame).astype(np.float64) ** 2, axis=1))
    return np.asarray(20 * np.log10(rms + 1e-10))


def why_drop(
    text: str, no_speech: float, avg_logprob: float, audio: np.ndarray, o: DropThresholds
) -> str | None:
    """Why this transcript of `audio` is not speech, or None to keep it. A remote engine
    that reports no scores (plain `json`) passes no_speech=0 and avg_logprob=0, which
    leaves only the level-based rules."""
    words = normalize_words(text)
    if not words:
        return "empty"
    if no_speech > o.no_speech_threshold and avg_logprob < o.log_prob_threshold:
        return "no_speech"  # Whisper's own silence rule
    if no_speech > max(o.no_speech_threshold, 0.8):
        return "no_speech"
    levels = frame_dbfs(audio)
    # Speech rises and falls by syllable (>= 10 dB even at 5 dB SNR); a level that barely
    # moves is a tone, hum or steady noise, on which Whisper invents short phrases.
    stationary = float(np.percentile(levels, 95) - np.percentile(levels, 10)) < o.stationary_db
    if stationary and avg_logprob < o.confident_logprob:
        return "non_speech"
    quiet = float(levels.max()) < o.min_speech_dbfs + 15
    if words in PHANTOM_PHRASES and (quiet or stationary or no_speech > o.phantom_no_speech_prob):
        return "phantom"
    return None
