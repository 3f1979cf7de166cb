"""The input audio of the current user turn, on the session clock.

The turn controller says where a turn begins (`BeginUserTurn`); this buffer keeps a few
seconds of recent audio so the turn can start a little before the VAD noticed it.
"""

from __future__ import annotations

from collections import deque

import numpy as np

RATE = 16_000


class UtteranceBuffer:
    """Recent 16 kHz audio with its clock times, and the current turn's audio."""

    def __init__(self, *, keep_s: float = 3.0, max_turn_s: float = 30.0, pre_roll_s: float = 0.2):
        self._recent: deque[tuple[float, np.ndarray]] = deque()  # (end ms, samples)
        self._recent_samples = 0
        self._keep = int(keep_s * RATE)
        self._max = int(max_turn_s * RATE)
        self._pre_roll_ms = pre_roll_s * 1000.0
        self._turn: list[np.ndarray] | None = None
        self._turn_samples = 0
        self.trimmed = False  # the turn outgrew max_turn_s and lost its oldest audio

    @property
    def active(self) -> bool:
        return self._turn is not None

    def append(self, audio: np.ndarray, end_ms: float) -> None:
        self._recent.append((end_ms, audio))
        self._recent_samples += len(audio)
        while self._recent_samples - len(self._recent[0][1]) >= self._keep:
            self._recent_samples -= len(self._recent.popleft()[1])
        if self._turn is not None:
            self._turn.append(audio)
            self._turn_samples += len(audio)
            while self._turn_samples > self._max and len(self._turn) > 1:
                self._turn_samples -= len(self._turn.pop(0))
                self.trimmed = True

    def begin(self, start_ms: float) -> None:
        """Start the turn at `start_ms` (minus a short pre-roll) from the recent audio."""
        start = start_ms - self._pre_roll_ms
        parts: list[np.ndarray] = []
        for end_ms, audio in self._recent:
            begin_ms = end_ms - len(audio) * 1000.0 / RATE
            if end_ms <= start:
                continue
            skip = max(0, int((start - begin_ms) * RATE / 1000.0))
            parts.append(audio[skip:])
        self._turn = parts
        self._turn_samples = sum(len(p) for p in parts)
        self.trimmed = False

    def audio(self) -> np.ndarray | None:
        if not self._turn:
            return None
        return np.concatenate(self._turn)

    def clear(self) -> None:
        self._turn = None
        self._turn_samples = 0
