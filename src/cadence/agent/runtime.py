"""The models a process shares between its sessions, loaded and warmed once.

Loading happens before a server says it is ready, so the first user never pays for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cadence.audio.asr import AsrOptions, load_transcriber
from cadence.audio.stages import SpeechRecognizer, SpeechSynthesizer
from cadence.audio.tts import TtsOptions, load_tts
from cadence.audio.vad import VadConfig
from cadence.config import Profile
from cadence.errors import ConfigError
from cadence.llm.base import LLMBackend
from cadence.llm.factory import make_llm

Progress = Callable[[str], None]


def _options(cls: Any, table: dict[str, Any], what: str) -> Any:
    try:
        return cls(**table)
    except TypeError as exc:
        raise ConfigError(f"[{what}] has an unknown or missing key: {exc}") from None


def make_asr(table: dict[str, Any]) -> SpeechRecognizer:
    """[asr] backend: "faster-whisper" (embedded, default) or "openai" (an HTTP engine)."""
    backend = table.pop("backend", "faster-whisper")
    if backend == "openai":
        from cadence.audio.http_asr import HttpAsrOptions, HttpTranscriber

        return HttpTranscriber(_options(HttpAsrOptions, table, "asr"))
    if backend != "faster-whisper":
        raise ConfigError(f"[asr] backend {backend!r} is not one of: faster-whisper, openai")
    return load_transcriber(_options(AsrOptions, table, "asr"))


def make_tts(table: dict[str, Any], voice: str) -> SpeechSynthesizer:
    """[tts] backend: "piper" (embedded, default) or "openai" (an HTTP engine)."""
    backend = table.pop("backend", "piper")
    if backend == "openai":
        from cadence.audio.http_tts import HttpTTS, HttpTtsOptions

        return HttpTTS(_options(HttpTtsOptions, table, "tts"))
    if backend != "piper":
        raise ConfigError(f"[tts] backend {backend!r} is not one of: piper, openai")
    table.setdefault("voice", voice)  # the profile's voice names a Piper voice here
    return load_tts(_options(TtsOptions, table, "tts"))


@dataclass
class Runtime:
    asr: SpeechRecognizer
    llm: LLMBackend
    tts: SpeechSynthesizer
    vad: VadConfig = field(default_factory=VadConfig)

    @classmethod
    async def load(cls, profile: Profile, progress: Progress | None = None) -> Runtime:
        say = progress or (lambda _msg: None)
        say(f"loading speech recognition ({profile.asr.get('backend', 'faster-whisper')})")
        asr = await asyncio.to_thread(make_asr, dict(profile.asr))
        say(f"loading language model ({profile.llm.get('backend', 'llama.cpp')})")
        llm = await asyncio.to_thread(make_llm, profile.llm)
        await llm.warm(profile.instructions)
        say(f"loading voice ({profile.tts.get('backend', 'piper')})")
        tts = await asyncio.to_thread(make_tts, dict(profile.tts), profile.voice)
        await asyncio.to_thread(tts.warm)
        await asyncio.to_thread(asr.warm)
        vad = _options(VadConfig, dict(profile.vad), "vad")
        say("models ready")
        return cls(asr=asr, llm=llm, tts=tts, vad=vad)
