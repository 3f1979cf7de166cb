"""The models a process shares between its sessions, loaded and warmed once.

Loading happens before a server says it is ready, so the first user never pays for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cadence.audio.asr import AsrOptions, Transcriber, load_transcriber
from cadence.audio.tts import PiperTTS, TtsOptions, load_tts
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


@dataclass
class Runtime:
    asr: Transcriber
    llm: LLMBackend
    tts: PiperTTS
    vad: VadConfig = field(default_factory=VadConfig)

    @classmethod
    async def load(cls, profile: Profile, progress: Progress | None = None) -> Runtime:
        say = progress or (lambda _msg: None)
        asr_table = dict(profile.asr)
        tts_table = dict(profile.tts)
        tts_table.setdefault("voice", profile.voice)
        say("loading speech recognition (faster-whisper)")
        asr = await asyncio.to_thread(load_transcriber, _options(AsrOptions, asr_table, "asr"))
        say(f"loading language model ({profile.llm.get('backend', 'llama.cpp')})")
        llm = await asyncio.to_thread(make_llm, profile.llm)
        await llm.warm(profile.instructions)
        say("loading voice (piper)")
        tts = await asyncio.to_thread(load_tts, _options(TtsOptions, tts_table, "tts"))
        await asyncio.to_thread(tts.warm)
        await asyncio.to_thread(asr.warm)
        vad = _options(VadConfig, dict(profile.vad), "vad")
        say("models ready")
        return cls(asr=asr, llm=llm, tts=tts, vad=vad)
