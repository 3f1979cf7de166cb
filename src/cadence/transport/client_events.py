"""Realtime client events → typed commands: JSON, sizes, base64 audio and items validated.

Pure functions (no loop, no session): `RealtimeProtocol` calls them and turns a
`Rejected` into an `error` event; the session never sees malformed input.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from cadence.audio.chunk import AudioChunk
from cadence.errors import (
    AudioFormatError,
    CadenceError,
    ImageError,
    LimitExceeded,
    ProtocolError,
)
from cadence.transport.tool_events import SetTools

REALTIME_RATE = 24_000  # the only PCM rate of the Realtime API
CLIENT_EVENT_TYPES = frozenset(
    {
        "session.update",
        "input_audio_buffer.append",
        "input_audio_buffer.commit",
        "input_audio_buffer.clear",
        "conversation.item.create",
        "conversation.item.truncate",
        "conversation.item.delete",
        "conversation.item.retrieve",
        "response.create",
        "response.cancel",
        "output_audio_buffer.clear",
    }
)


class Rejected(Exception):
    """A client event that cannot be used: becomes one `error` event, the session goes on."""

    def __init__(self, cause: CadenceError, event_id: str | None = None, param: str | None = None):
        super().__init__(cause.message)
        self.cause = cause
        self.event_id = event_id
        self.param = param


@dataclass(frozen=True)
class AppendAudio:
    audio: AudioChunk  # 24 kHz mono int16


@dataclass(frozen=True)
class CommitAudio:
    item_id: str


@dataclass(frozen=True)
class ClearAudio:
    pass


@dataclass(frozen=True)
class SetTurnDetection:
    enabled: bool


@dataclass(frozen=True)
class SetInstructions:
    instructions: str


ItemKind = Literal["text", "audio", "image", "function_call_output", "function_call", "other"]


@dataclass(frozen=True)
class CreateItem:
    """A conversation item; the transport executes it, then reports it added (or an error)."""

    item: dict[str, Any]  # as echoed in conversation.item.added (id and status filled in)
    kind: ItemKind
    role: str = "user"
    text: str = ""
    audio: AudioChunk | None = None
    image: bytes | None = field(default=None, repr=False)
    image_mime: str = ""
    call_id: str = ""
    previous_item_id: str | None = None
    event_id: str | None = None


@dataclass(frozen=True)
class ReportPlayed:
    generation: int
    played_ms: float


@dataclass(frozen=True)
class RequestResponse:
    instructions: str | None = None


@dataclass(frozen=True)
class CancelResponse:
    pass


Command = (
    AppendAudio
    | CommitAudio
    | ClearAudio
    | SetTurnDetection
    | SetInstructions
    | CreateItem
    | ReportPlayed
    | RequestResponse
    | CancelResponse
    | SetTools
)


def decode_event(raw: str | bytes, max_bytes: int) -> dict[str, Any]:
    """JSON text → an event object with a known `type`, or `Rejected`."""
    if len(raw) > max_bytes:
        raise Rejected(
            LimitExceeded(
                f"message of {len(raw)} bytes is over the {max_bytes}-byte limit; "
                "send audio in smaller appends and images under the image limit"
            )
        )
    try:
        event = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise Rejected(
            ProtocolError(f"message is not valid JSON ({exc}); send one JSON object")
        ) from None
    if not isinstance(event, dict):
        raise Rejected(ProtocolError("a client event must be a JSON object with a `type`"))
    _check_unicode(raw, event)
    event_id = event.get("event_id")
    if event_id is not None and not isinstance(event_id, str):
        raise Rejected(ProtocolError("event_id must be a string"), None, "event_id")
    kind = event.get("type")
    if not isinstance(kind, str):
        raise Rejected(ProtocolError("the event has no string `type`"), event_id, "type")
    if kind not in CLIENT_EVENT_TYPES:
        raise Rejected(
            ProtocolError(
                f"unknown client event type {kind[:80]!r}; see the Realtime API event list"
            ),
            event_id,
            "type",
        )
    return event


def _check_unicode(raw: str | bytes, event: dict[str, Any]) -> None:
    """JSON may escape lone surrogates (`"\\ud800"`), which no UTF-8 encoder downstream
    (tokenizers, logs, the wire) accepts: refuse them here, once, at the edge."""
    marker = b"\\u" if isinstance(raw, bytes) else "\\u"
    if marker not in raw:  # type: ignore[operator]
        return
    try:
        json.dumps(event, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise Rejected(
            ProtocolError("the event holds invalid Unicode (a lone surrogate); send UTF-8 text"),
            event.get("event_id") if isinstance(event.get("event_id"), str) else None,
        ) from None


def field_of(
    event: dict[str, Any], name: str, kind: type | tuple[type, ...], *, required: bool = True
) -> Any:
    """`event[name]` checked against `kind` (None when absent and not required)."""
    value = event.get(name)
    if value is None and not required:
        return None
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        value = object()  # a bool is an int to isinstance; never accept it as a number
    if not isinstance(value, kind):
        expected = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise Rejected(
            ProtocolError(f"{event.get('type')}: `{name}` must be a {expected}"),
            event.get("event_id"),
            name,
        )
    return value


def decode_pcm16(data: str, event_id: str | None, param: str = "audio") -> AudioChunk:
    """Base64 little-endian 16-bit mono PCM at 24 kHz → an AudioChunk."""
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise Rejected(
            AudioFormatError(
                "audio is not valid base64 (expected base64 of 24 kHz 16-bit mono PCM)"
            ),
            event_id,
            param,
        ) from None
    try:
        return AudioChunk.from_pcm16_bytes(raw, REALTIME_RATE)
    except AudioFormatError as exc:
        raise Rejected(
            AudioFormatError(f"{exc.message}; audio must be 16-bit mono PCM at 24 kHz"),
            event_id,
            param,
        ) from None


def decode_data_url(url: str, max_bytes: int, event_id: str | None) -> tuple[bytes, str]:
    """A `data:image/...;base64,` URL → (bytes, mime). Remote URLs are refused: no fetching."""
    if not url.startswith("data:"):
        raise Rejected(
            ImageError(
                "image_url must be a data: URL (data:image/png;base64,...); "
                "remote URLs are not fetched"
            ),
            event_id,
            "image_url",
        )
    header, _, payload = url[5:].partition(",")
    mime, _, encoding = header.partition(";")
    if encoding != "base64" or not mime.startswith("image/"):
        raise Rejected(
            ImageError("image_url must be data:image/<type>;base64,<data>"), event_id, "image_url"
        )
    if len(payload) * 3 // 4 > max_bytes:
        raise Rejected(
            LimitExceeded(f"image is larger than the {max_bytes}-byte limit; downscale it first"),
            event_id,
            "image_url",
        )
    try:
        return base64.b64decode(payload, validate=True), mime
    except (binascii.Error, ValueError):
        raise Rejected(
            ImageError("image_url payload is not valid base64"), event_id, "image_url"
        ) from None


def _content_list(item: dict[str, Any], event_id: str | None) -> list[dict[str, Any]]:
    content = item.get("content", [])
    if not isinstance(content, list) or not all(isinstance(c, dict) for c in content):
        raise Rejected(
            ProtocolError("item.content must be a list of content objects"),
            event_id,
            "item.content",
        )
    return content


def parse_item(event: dict[str, Any], item_id: str, max_image_bytes: int) -> CreateItem:
    """`conversation.item.create` → `CreateItem` with the item normalised for echoing."""
    event_id = event.get("event_id")
    item = dict(field_of(event, "item", dict))
    previous = field_of(event, "previous_item_id", str, required=False)
    item_type = item.get("type", "message")
    client_id = item.get("id")
    item.update(
        id=client_id if isinstance(client_id, str) and client_id else item_id,
        object="realtime.item",
        status="completed",
    )
    if item_type == "function_call_output":
        call_id, output = item.get("call_id"), item.get("output")
        if not isinstance(call_id, str) or not isinstance(output, str):
            raise Rejected(
                ProtocolError("function_call_output needs string call_id and output"),
                event_id,
                "item",
            )
        return CreateItem(
            item,
            "function_call_output",
            "tool",
            output,
            call_id=call_id,
            previous_item_id=previous,
            event_id=event_id,
        )
    if item_type == "function_call":
        return CreateItem(
            item,
            "function_call",
            "assistant",
            str(item.get("arguments", "")),
            call_id=str(item.get("call_id", "")),
            previous_item_id=previous,
            event_id=event_id,
        )
    if item_type != "message":
        raise Rejected(
            ProtocolError(f"unsupported item type {str(item_type)[:40]!r}"), event_id, "item.type"
        )
    role = item.get("role")
    if role not in ("user", "assistant", "system"):
        raise Rejected(
            ProtocolError("message role must be user, assistant or system"), event_id, "item.role"
        )
    texts: list[str] = []
    audio: AudioChunk | None = None
    image: tuple[bytes, str] | None = None
    for part in _content_list(item, event_id):
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text"):
            texts.append(field_of(part, "text", str))
        elif kind == "input_audio":
            audio = decode_pcm16(field_of(part, "audio", str), event_id, "item.content.audio")
            if isinstance(part.get("transcript"), str):
                texts.append(part["transcript"])
            part.pop("audio", None)  # echo the item without megabytes of base64
        elif kind == "input_image":
            image = decode_data_url(field_of(part, "image_url", str), max_image_bytes, event_id)
            part["image_url"] = f"data:{image[1]};base64,<{len(image[0])} bytes>"
        else:
            raise Rejected(
                ProtocolError(f"unsupported content type {str(kind)[:40]!r}"),
                event_id,
                "item.content.type",
            )
    text = " ".join(t.strip() for t in texts if t.strip())
    if image is not None:
        return CreateItem(
            item,
            "image",
            role,
            text,
            image=image[0],
            image_mime=image[1],
            previous_item_id=previous,
            event_id=event_id,
        )
    if audio is not None and not text:
        return CreateItem(
            item, "audio", role, "", audio=audio, previous_item_id=previous, event_id=event_id
        )
    if not text:
        raise Rejected(
            ProtocolError("the message has no text, audio or image content"),
            event_id,
            "item.content",
        )
    return CreateItem(item, "text", role, text, previous_item_id=previous, event_id=event_id)
