"""What the session needs from a speech recognizer and a speech synthesizer.

The embedded engines (faster-whisper, Piper) and the remote ones (OpenAI-compatible HTTP
servers) all fit these shapes; both run synchronously in worker threads.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np

from cadence.audio.asr import AsrResult


class SpeechRecognizer(Protocol):
    def transcribe(self, audio_16k_f32: np.ndarray) -> AsrResult: ...

    def warm(self) -> None: ...


class SpeechSynthesizer(Protocol):
    sample_rate: int

    def stream(self, text: str) -> Iterator[np.ndarray]: ...

    def warm(self) -> None: ...
