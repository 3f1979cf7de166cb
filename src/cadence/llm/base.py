"""One streaming interface for every language-model backend (embedded, transformers, HTTP).

A backend streams text deltas as an async iterator. Cancelling the consuming task or
closing the iterator (`aclose()`) stops generation promptly and frees the model for the
next caller; nothing from a cancelled stream is yielded afterwards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True)
class ImagePart:
    """An image for a vision model: encoded bytes (PNG/JPEG) after the preprocessing contract."""

    data: bytes
    mime: str = "image/png"
    tokens: int | None = None  # token cost, known before the call


@dataclass(frozen=True)
class AudioPart:
    """Audio for an audio-native model: 16 kHz mono float32 samples as little-endian bytes."""

    pcm_f32: bytes
    sample_rate: int = 16_000
    tokens: int | None = None


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str
    images: tuple[ImagePart, ...] = field(default=())
    audio: tuple[AudioPart, ...] = field(default=())
    name: str | None = None  # tool name, for role="tool"


@dataclass(frozen=True)
class GenerationOptions:
    max_tokens: int = 120
    temperature: float = 0.2
    stop: tuple[str, ...] = ()


@runtime_checkable
class LLMBackend(Protocol):
    """What the session needs from any language model."""

    name: str
    context_window: int

    def stream(
        self, messages: Sequence[ChatMessage], options: GenerationOptions | None = None
    ) -> AsyncIterator[str]:
        """Yield text deltas as they are generated; an empty delta is a heartbeat (the
        model is working, e.g. on a long prompt) that readers skip but count as progress."""
        ...

    async def warm(self, system_prompt: str) -> None:
        """Load and prime the model (e.g. evaluate the system-prompt prefix) before use."""
        ...

    def count_tokens(self, text: str) -> int: ...
