"""What the simulated user hears from any target, and how targets are named on the command line.

Every target (in-process, WebSocket, WebRTC) becomes a `Link` that takes 20 ms mic frames and
yields these client events, each stamped with its arrival time (`time.perf_counter()`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from cadence.errors import ConfigError

REALTIME_PATH = "/v1/realtime"
REALTIME_RATE = 24_000


@dataclass(frozen=True)
class SpeechStarted:
    t: float


@dataclass(frozen=True)
class SpeechStopped:
    t: float


@dataclass(frozen=True)
class Transcript:
    t: float
    text: str


@dataclass(frozen=True)
class ResponseCreated:
    t: float
    key: str


@dataclass(frozen=True)
class AudioIn:
    """Reply audio pushed to the client (WebSocket, in-process): the client plays it."""

    t: float
    key: str
    item: str
    ms: float


@dataclass(frozen=True)
class PacedFrame:
    """A 20 ms frame of the agent's paced media track (WebRTC): arrival is playback."""

    t: float
    loud: bool


@dataclass(frozen=True)
class ReplyText:
    t: float
    key: str
    text: str


@dataclass(frozen=True)
class ResponseDone:
    t: float
    key: str
    status: str
    text: str
    latency: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PlaybackHint:
    """The server says what a player should do (in-process only; Realtime has no resume)."""

    t: float
    key: str
    command: Literal["pause", "resume", "stop"]


@dataclass(frozen=True)
class ServerError:
    t: float
    message: str


ClientEvent = (
    SpeechStarted
    | SpeechStopped
    | Transcript
    | ResponseCreated
    | AudioIn
    | PacedFrame
    | ReplyText
    | ResponseDone
    | PlaybackHint
    | ServerError
)


class Link(Protocol):
    """One connection to the agent under test (open with `async with`)."""

    paced: bool  # True: the server paces reply audio in real time (WebRTC)

    async def __aenter__(self) -> Link: ...
    async def __aexit__(self, *exc: object) -> None: ...
    async def send_audio(self, frame: np.ndarray) -> None:
        """A 20 ms mono float32 frame at 16 kHz."""

    async def show(self, pixels: np.ndarray) -> None:
        """What the user's camera sees now (H×W×3 RGB uint8), called a few times a second."""

    async def truncate(self, key: str, item: str, played_ms: float) -> None: ...
    def events(self) -> AsyncIterator[ClientEvent]: ...


def parse_realtime(event: dict[str, Any], t: float) -> ClientEvent | None:
    """A Realtime GA server event → a client event (None for those the bench ignores)."""
    kind = event.get("type")
    if kind == "input_audio_buffer.speech_started":
        return SpeechStarted(t)
    if kind == "input_audio_buffer.speech_stopped":
        return SpeechStopped(t)
    if kind == "conversation.item.input_audio_transcription.completed":
        return Transcript(t, str(event.get("transcript") or ""))
    if kind == "response.created":
        return ResponseCreated(t, str(event.get("response", {}).get("id", "")))
    if kind == "response.output_audio.delta":
        b64 = str(event.get("delta") or "")
        # Count bytes from the base64 length instead of decoding: the bench never plays it.
        n_bytes = len(b64) * 3 // 4 - b64[-2:].count("=")
        ms = n_bytes / 2 / REALTIME_RATE * 1000.0
        return AudioIn(t, str(event.get("response_id", "")), str(event.get("item_id", "")), ms)
    if kind in ("response.output_audio_transcript.delta", "response.output_text.delta"):
        return ReplyText(t, str(event.get("response_id", "")), str(event.get("delta") or ""))
    if kind == "response.done":
        return _response_done(event.get("response") or {}, t)
    if kind == "error":
        error = event.get("error") or {}
        return ServerError(t, f"{error.get('code') or error.get('type')}: {error.get('message')}")
    return None


def _response_done(response: dict[str, Any], t: float) -> ResponseDone:
    text = ""
    for item in response.get("output") or []:
        for part in item.get("content") or []:
            text += str(part.get("transcript") or part.get("text") or "")
    latency: dict[str, Any] = {}
    raw = (response.get("metadata") or {}).get("latency")
    if isinstance(raw, str):
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        latency = parsed if isinstance(parsed, dict) else {}
    return ResponseDone(
        t, str(response.get("id", "")), str(response.get("status", "")), text, latency
    )


@dataclass(frozen=True)
class Target:
    kind: Literal["inproc", "ws", "webrtc"]
    url: str = ""  # ws: the Realtime WebSocket URL; webrtc: the calls endpoint (http/https)
    token: str | None = None

    @property
    def label(self) -> str:
        return "inproc" if self.kind == "inproc" else self.url


def parse_target(spec: str, token: str | None = None) -> Target:
    """`inproc`, `ws://HOST:PORT` (adds /v1/realtime), `webrtc://HOST:PORT`, or a full URL."""
    if spec == "inproc":
        return Target("inproc")
    parts = urlsplit(spec)
    if parts.scheme in ("ws", "wss") and parts.netloc:
        path = parts.path if parts.path not in ("", "/") else REALTIME_PATH
        return Target("ws", urlunsplit((parts.scheme, parts.netloc, path, parts.query, "")), token)
    if parts.scheme in ("webrtc", "webrtcs") and parts.netloc:
        scheme = "https" if parts.scheme == "webrtcs" else "http"
        base = parts.path.rstrip("/") if parts.path not in ("", "/") else REALTIME_PATH
        url = urlunsplit((scheme, parts.netloc, base + "/calls", parts.query, ""))
        return Target("webrtc", url, token)
    raise ConfigError(
        f"unknown target {spec!r}; use inproc, ws://HOST:PORT, webrtc://HOST:PORT "
        "or a full Realtime URL such as wss://HOST/v1/realtime?model=NAME"
    )


def png_data_url(pixels: np.ndarray) -> str:
    """RGB pixels as a `data:image/png;base64,…` URL (a Realtime `input_image`)."""
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def session_update() -> dict[str, Any]:
    """What the bench asks of any Realtime server: 24 kHz PCM in and out, server turn taking."""
    pcm = {"type": "audio/pcm", "rate": REALTIME_RATE}
    return {
        "type": "session.update",
        "session": {
            "type": "realtime",
            "audio": {
                "input": {
                    "format": pcm,
                    "turn_detection": {"type": "server_vad"},
                    "transcription": {"model": "whisper-1"},
                },
                "output": {"format": pcm},
            },
        },
    }
