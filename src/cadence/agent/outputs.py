"""What a session tells the outside world: transcripts, reply text and audio, state, latency.

Transports map these one-to-one onto their wire events (Realtime JSON, WebRTC data channel,
the Python API's async iterator); the session never formats wire messages itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from cadence.audio.chunk import AudioChunk


@dataclass(frozen=True)
class UserSpeechStarted:
    audio_ms: float  # on the session clock


@dataclass(frozen=True)
class UserSpeechStopped:
    audio_ms: float


@dataclass(frozen=True)
class UserTranscript:
    text: str
    final: bool


@dataclass(frozen=True)
class UserTurnCommitted:
    text: str


@dataclass(frozen=True)
class ResponseStarted:
    generation: int


@dataclass(frozen=True)
class ResponseText:
    """The words of the audio that follows (a clause), released together with it."""

    generation: int
    text: str


@dataclass(frozen=True)
class ResponseAudio:
    generation: int
    audio: AudioChunk  # mono float32 at the session's output rate


@dataclass(frozen=True)
class PlaybackControl:
    """Pause, resume or flush (stop) what a player still has queued of a generation."""

    generation: int
    command: Literal["pause", "resume", "stop"]


@dataclass(frozen=True)
class ResponseDone:
    generation: int
    text: str  # everything generated
    status: Literal["completed", "cancelled", "failed"]
    latency: dict[str, Any] = field(default_factory=dict)
    reason: str = ""


@dataclass(frozen=True)
class AssistantTurnCommitted:
    """What the user actually heard of a generation, as recorded in the history."""

    generation: int
    text: str
    interrupted: bool
    played_ms: float


@dataclass(frozen=True)
class ToolCallStarted:
    """The agent calls a tool (a Realtime `function_call` item); its arguments follow."""

    generation: int
    call_id: str
    name: str
    client: bool = False  # the client runs it and answers with a `function_call_output`


@dataclass(frozen=True)
class ToolCallArguments:
    """A piece of a call's JSON arguments; `done` once complete (`arguments` holds all)."""

    generation: int
    call_id: str
    delta: str = ""
    done: bool = False
    arguments: str = ""


@dataclass(frozen=True)
class ToolCallFinished:
    """A call's one output: the tool's result, or a recorded cancellation (JSON text)."""

    generation: int
    call_id: str
    name: str
    output: str
    status: Literal["completed", "failed", "cancelled"]
    ran: bool = True  # the tool was started: if cancelled, it may have acted anyway
    client: bool = False
    side_effects_uncertain: bool = False  # cancelled mid-way: "the booking may have gone through"


@dataclass(frozen=True)
class StateUpdate:
    state: str  # listening | thinking | speaking (user_speaking shows as listening)


@dataclass(frozen=True)
class SessionError:
    code: str
    message: str


SessionOutput = (
    UserSpeechStarted
    | UserSpeechStopped
    | UserTranscript
    | UserTurnCommitted
    | ResponseStarted
    | ResponseText
    | ResponseAudio
    | PlaybackControl
    | ResponseDone
    | AssistantTurnCommitted
    | ToolCallStarted
    | ToolCallArguments
    | ToolCallFinished
    | StateUpdate
    | SessionError
)
