"""Request bodies for OpenAI-compatible `/v1/chat/completions` (vLLM, SGLang, llama.cpp server).

Text, `image_url` (data URL) and `input_audio` (base64 WAV) parts, exactly as the wire wants.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import soundfile as sf

from cadence.audio.chunk import float32_to_pcm16
from cadence.errors import InputError
from cadence.llm.audio_tokens import samples_at
from cadence.llm.base import AudioPart, ChatMessage, GenerationOptions, ImagePart

WIRE_AUDIO_RATE = 16_000  # what the audio-LLM encoders want; servers resample anything else
_IMAGE_MIMES = {"image/png", "image/jpeg", "image/webp", "image/gif"}


def wav_bytes(part: AudioPart, sample_rate: int = WIRE_AUDIO_RATE) -> bytes:
    """The part as a 16-bit PCM mono WAV file at `sample_rate` (every server decodes that)."""
    samples = samples_at(part, sample_rate)
    buf = io.BytesIO()
    sf.write(buf, float32_to_pcm16(samples), sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def input_audio_part(part: AudioPart) -> dict[str, Any]:
    """`{"type": "input_audio", "input_audio": {"data": <base64 WAV>, "format": "wav"}}`."""
    data = base64.b64encode(wav_bytes(part)).decode("ascii")
    return {"type": "input_audio", "input_audio": {"data": data, "format": "wav"}}


def image_url_part(image: ImagePart) -> dict[str, Any]:
    """`{"type": "image_url", "image_url": {"url": "data:<mime>;base64,..."}}`."""
    if image.mime not in _IMAGE_MIMES:
        raise InputError(f"image type {image.mime!r} cannot go in a data URL; use PNG or JPEG")
    data = base64.b64encode(image.data).decode("ascii")
    return {"type": "image_url", "image_url": {"url": f"data:{image.mime};base64,{data}"}}


def message_to_wire(message: ChatMessage) -> dict[str, Any]:
    """One chat message in the wire format; media only on user messages, as the API allows."""
    if message.role == "tool":
        if not message.name:
            raise InputError("a tool message needs `name` (sent as its tool_call_id)")
        return {"role": "tool", "tool_call_id": message.name, "content": message.content}
    if message.role != "user":
        if message.images or message.audio:
            raise InputError(f"{message.role} messages cannot carry images or audio on the wire")
        return {"role": message.role, "content": message.content}
    if not message.images and not message.audio:
        return {"role": "user", "content": message.content}
    # Media first, then the words about it: the order the Qwen templates lay out a turn.
    parts: list[dict[str, Any]] = [image_url_part(i) for i in message.images]
    parts += [input_audio_part(a) for a in message.audio]
    if message.content:
        parts.append({"type": "text", "text": message.content})
    return {"role": "user", "content": parts}


def build_chat_request(
    messages: Sequence[ChatMessage],
    *,
    model: str,
    options: GenerationOptions | None = None,
    stream: bool = True,
) -> dict[str, Any]:
    """The JSON body of a chat completion request; `stream` adds usage to the last chunk."""
    if not messages:
        raise InputError("a chat request needs at least one message")
    opts = options or GenerationOptions()
    body: dict[str, Any] = {
        "model": model,
        "messages": [message_to_wire(m) for m in messages],
        "max_tokens": opts.max_tokens,
        "temperature": opts.temperature,
        "stream": stream,
    }
    if opts.stop:
        body["stop"] = list(opts.stop)
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


def decode_input_audio(part: dict[str, Any]) -> tuple[np.ndarray, int]:
    """Back from an `input_audio` part to float32 samples and rate (for tests and servers)."""
    raw = base64.b64decode(part["input_audio"]["data"], validate=True)
    data, rate = sf.read(io.BytesIO(raw), dtype="float32")
    return np.asarray(data, dtype=np.float32), int(rate)
