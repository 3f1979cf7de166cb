"""Speech recognition on a remote engine over OpenAI's `/v1/audio/transcriptions`.

Same shape as the embedded `Transcriber` (sync, for worker threads); silence never leaves the box.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass
from typing import Any

import httpx2
import numpy as np
import soundfile as sf

from cadence.audio.asr import AsrResult
from cadence.audio.chunk import float32_to_pcm16
from cadence.audio.transcript_rules import SAMPLE_RATE, checked_utterance, frame_dbfs, why_drop
from cadence.errors import ConfigError, ModelError
from cadence.net.client import Engine, EngineOptions

_FORMATS = ("json", "verbose_json")


@dataclass(frozen=True)
class HttpAsrOptions(EngineOptions):
    """`[asr] backend = "openai"`: a Whisper-style server (vLLM, faster-whisper servers).

    `response_format="json"` (text only) works everywhere; "verbose_json" adds per-segment
    `no_speech_prob` / `avg_logprob`, which turn on Whisper's confidence-based dropping.
    """

    model: str = "whisper-1"
    language: str | None = None  # None: the engine detects it
    response_format: str = "json"
    prompt: str | None = None  # vocabulary hint (names, jargon) passed to the decoder
    temperature: float = 0.0
    no_speech_threshold: float = 0.6
    log_prob_threshold: float = -1.0
    phantom_no_speech_prob: float = 0.6
    stationary_db: float = 6.0  # frame-level spread below which audio is a tone or hum...
    confident_logprob: float = -0.7  # ...unless the decoder is this sure ("verbose_json")
    min_speech_dbfs: float = -50.0  # loudest 20 ms frame below this: silence, not sent
    max_utterance_s: float = 120.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.response_format not in _FORMATS:
            raise ConfigError(
                f"[asr] response_format {self.response_format!r} is not one of {_FORMATS}"
            )


class HttpTranscriber:
    """Recognizes a whole utterance (16 kHz mono float32) on the engine. Thread-safe."""

    def __init__(self, options: HttpAsrOptions) -> None:
        self.options = options
        self._engine = Engine(options, "ASR engine")
        self._url = self._engine.url("audio/transcriptions")

    def warm(self) -> None:
        """One short request: fails now (BackendUnavailable) if the engine is down."""
        t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
        self._post((0.1 * np.sin(2 * np.pi * 200 * t)).astype(np.float32))

    def transcribe(self, audio_16k_f32: np.ndarray) -> AsrResult:
        """Recognize one utterance; empty text (with `dropped`) for silence or non-speech."""
        start = time.perf_counter()
        o = self.options
        audio, duration = checked_utterance(audio_16k_f32, o.max_utterance_s)
        language = o.language or "en"
        if not len(audio) or float(frame_dbfs(audio).max()) < o.min_speech_dbfs:
            return AsrResult("", 1.0, 0.0, duration, _ms(start), language, dropped="silence")
        payload = self._post(audio)
        text = str(payload.get("text", "")).strip()
        segments = [s for s in payload.get("segments") or [] if isinstance(s, dict)]
        no_speech = min((float(s.get("no_speech_prob") or 0.0) for s in segments), default=0.0)
        logprobs = [float(s["avg_logprob"]) for s in segments if s.get("avg_logprob") is not None]
        avg_logprob = float(np.mean(logprobs)) if logprobs else 0.0
        language = str(payload.get("language") or language)
        dropped = why_drop(text, no_speech, avg_logprob, audio, o)
        return AsrResult(
            "" if dropped else text,
            no_speech,
            avg_logprob,
            duration,
            _ms(start),
            language,
            dropped,
        )

    def close(self) -> None:
        self._engine.close()

    def _post(self, audio: np.ndarray) -> dict[str, Any]:
        o = self.options
        buf = io.BytesIO()
        sf.write(buf, float32_to_pcm16(audio), SAMPLE_RATE, format="WAV", subtype="PCM_16")
        form = {"model": o.model, "response_format": o.response_format}
        form["temperature"] = str(o.temperature)
        if o.language:
            form["language"] = o.language
        if o.prompt:
            form["prompt"] = o.prompt
        files = {"file": ("utterance.wav", buf.getvalue(), "audio/wav")}
        response = self._engine.open_sync("POST", self._url, data=form, files=files)
        try:
            body = response.read()
        except httpx2.HTTPError as exc:
            raise self._engine.transport_error(exc, self._url) from None
        finally:
            response.close()
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            raise ModelError(
                f"the ASR engine at {self._url} did not answer with a JSON object: {body[:120]!r}"
            )
        return payload


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0
