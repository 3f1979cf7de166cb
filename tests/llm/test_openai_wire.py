"""OpenAI-compatible chat requests with `input_audio` parts, checked against the openai SDK."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import pytest

openai = pytest.importorskip("openai")
httpx2 = pytest.importorskip("httpx2")

from pydantic import TypeAdapter  # noqa: E402

from cadence.errors import InputError  # noqa: E402
from cadence.llm.base import AudioPart, ChatMessage, GenerationOptions, ImagePart  # noqa: E402
from cadence.llm.openai_wire import (  # noqa: E402
    build_chat_request,
    decode_input_audio,
    input_audio_part,
)

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)


def _listed(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _listed(v) for k, v in value.items()}
    if isinstance(value, str):
        return value
    if hasattr(value, "__iter__"):  # lists, and pydantic's lazy ValidatorIterator for Iterable[...]
        return [_listed(v) for v in value]
    return value


def _roundtrip(adapter: TypeAdapter[Any], value: Any) -> Any:
    """Validated by the SDK type: keys it does not declare are dropped, so equality proves none."""
    return _listed(adapter.validate_python(value))


def _audio(rate: int = 16_000, seconds: float = 0.5) -> tuple[np.ndarray, AudioPart]:
    t = np.arange(int(rate * seconds)) / rate
    x = (0.5 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    return x, AudioPart(x.astype("<f4").tobytes(), rate)


def _messages() -> list[ChatMessage]:
    _, part = _audio()
    return [
        ChatMessage("system", "You are terse."),
        ChatMessage("user", "what did I say?", images=(ImagePart(PNG),), audio=(part,)),
        ChatMessage("assistant", "You asked about the weather."),
        ChatMessage("tool", '{"temp_c": 21}', name="call_1"),
    ]


def test_audio_part_is_exactly_the_wire_shape() -> None:
    from openai.types.chat import ChatCompletionContentPartInputAudioParam

    x, part = _audio()
    wire = input_audio_part(part)
    assert set(wire) == {"type", "input_audio"} and set(wire["input_audio"]) == {"data", "format"}
    assert wire["type"] == "input_audio" and wire["input_audio"]["format"] == "wav"
    adapter = TypeAdapter(ChatCompletionContentPartInputAudioParam)
    assert _roundtrip(adapter, wire) == wire
    assert _roundtrip(adapter, {**wire, "sample_rate": 16_000}) == wire  # the check can fail
    raw = base64.b64decode(wire["input_audio"]["data"])
    assert raw[:4] == b"RIFF" and raw[8:12] == b"WAVE"
    back, rate = decode_input_audio(wire)
    assert rate == 16_000 and np.max(np.abs(back - x)) < 1e-3  # 16-bit PCM round trip


def test_audio_is_resampled_to_16k_on_the_wire() -> None:
    _, part = _audio(rate=48_000)
    back, rate = decode_input_audio(input_audio_part(part))
    assert rate == 16_000 and abs(len(back) - 8_000) <= 1


def test_messages_validate_as_sdk_params() -> None:
    from openai.types.chat import ChatCompletionMessageParam, ChatCompletionUserMessageParam

    body = build_chat_request(_messages(), model="qwen2-audio", stream=True)
    assert _roundtrip(TypeAdapter(list[ChatCompletionMessageParam]), body["messages"]) == body[
        "messages"
    ]
    user = body["messages"][1]
    assert _roundtrip(TypeAdapter(ChatCompletionUserMessageParam), user) == user
    assert [p["type"] for p in user["content"]] == ["image_url", "input_audio", "text"]
    assert user["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")
    tool = {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 21}'}
    assert body["messages"][3] == tool
    assert body["stream_options"] == {"include_usage": True}


def test_body_equals_what_the_sdk_itself_sends() -> None:
    sent: list[dict[str, Any]] = []

    def handler(request: Any) -> Any:
        sent.append(json.loads(request.content))
        return httpx2.Response(200, json={
            "id": "x", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "ok"}}],
        })

    client = openai.OpenAI(api_key="test", base_url="http://127.0.0.1:9/v1",
                           http_client=httpx2.Client(transport=httpx2.MockTransport(handler)))
    opts = GenerationOptions(max_tokens=32, temperature=0.0, stop=("\n\n",))
    body = build_chat_request(_messages(), model="qwen2-audio", options=opts, stream=False)
    client.chat.completions.create(**body)
    assert sent == [body]


def test_bad_messages_are_refused() -> None:
    _, part = _audio()
    with pytest.raises(InputError):
        build_chat_request([], model="m")
    with pytest.raises(InputError):
        build_chat_request([ChatMessage("assistant", "x", audio=(part,))], model="m")
    with pytest.raises(InputError):
        build_chat_request([ChatMessage("tool", "x")], model="m")
    with pytest.raises(InputError):
        build_chat_request([ChatMessage("user", "x", images=(ImagePart(b"", "image/tiff"),))],
                           model="m")
