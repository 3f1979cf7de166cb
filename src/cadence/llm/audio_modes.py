"""Session modes for the user's turn: cascade (ASR → LLM), native (audio → audio-LLM), hybrid.

One helper builds what the model gets and what the history keeps, so every mode is one call.
"""

from __future__ import annotations

from dataclasses import dataclass

from cadence.audio.chunk import AudioChunk
from cadence.audio.prosody import ProsodyFeatures
from cadence.config import Mode
from cadence.errors import ConfigError, InputError
from cadence.llm.audio_tokens import part_from_chunk
from cadence.llm.base import AudioPart, ChatMessage

MODES: tuple[Mode, ...] = ("cascade", "native", "hybrid")


@dataclass(frozen=True)
class UserTurn:
    """`for_model` is sent this turn; `for_history` is recorded (and shown in the UI)."""

    for_model: ChatMessage
    for_history: ChatMessage


def prosody_line(prosody: ProsodyFeatures | str | None) -> str:
    """"[prosody: question intonation, hesitant]", or "" when there is nothing to say."""
    hint = prosody if isinstance(prosody, str) else (prosody.to_hint() if prosody else "")
    return f"[prosody: {hint}]" if hint else ""


def build_user_turn(
    mode: Mode,
    *,
    transcript: str | None,
    audio: AudioChunk | AudioPart | None,
    prosody: ProsodyFeatures | str | None = None,
) -> UserTurn:
    """The user's message for `mode`.

    cascade: the transcript (and the prosody line, the CPU stand-in for hearing the audio)
    to the model; the bare transcript to history.
    native: the audio (and the prosody line) to the model; history keeps the audio with the
    transcript when there is one, so later turns can still replay or describe it.
    hybrid: the audio (and the prosody line) to the model; history keeps only the transcript.
    """
    if mode not in MODES:
        raise ConfigError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    line = prosody_line(prosody)
    text = (transcript or "").strip()
    if mode == "cascade":
        if not text:
            raise InputError("cascade mode needs a transcript; the ASR produced none")
        content = f"{text}\n{line}" if line else text
        return UserTurn(ChatMessage("user", content), ChatMessage("user", text))
    if audio is None:
        raise InputError(f"{mode} mode needs the user's audio")
    part = part_from_chunk(audio) if isinstance(audio, AudioChunk) else audio
    for_model = ChatMessage("user", line, audio=(part,))
    if mode == "native":
        return UserTurn(for_model, ChatMessage("user", text, audio=(part,)))
    return UserTurn(for_model, ChatMessage("user", text))
