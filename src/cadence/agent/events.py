"""The vocabulary of the turn controller: timestamped events in, actions out.

Every time is on the session clock in milliseconds (`t_ms`). The controller never reads a
clock: the session stamps events, and `Tick` moves time on when nothing else happens.
Events about audio carry `audio_ms`, the session-clock time at which that audio itself
started or ended (it can be earlier than `t_ms`: VAD decides after a short hangover).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class TurnState(StrEnum):
    LISTENING = "listening"
    USER_SPEAKING = "user_speaking"
    THINKING = "thinking"
    SPEAKING = "speaking"
    INTERRUPTED = "interrupted"  # playback paused on possible barge-in, awaiting words


# ---- events (inputs) -------------------------------------------------------------------


@dataclass(frozen=True)
class SpeechStarted:
    t_ms: float
    audio_ms: float  # when the voiced audio began
    echo_likelihood: float = 0.0  # 0 = surely the user, 1 = surely our own voice coming back


@dataclass(frozen=True)
class SpeechEnded:
    t_ms: float
    audio_ms: float  # end of the last voiced frame: "end of user speech" for latency


@dataclass(frozen=True)
class VoiceProbability:
    t_ms: float
    probability: float


@dataclass(frozen=True)
class Transcript:
    """ASR output for the current user utterance; `final` once decoded after speech end."""

    t_ms: float
    text: str
    final: bool
    audio_end_ms: float = 0.0  # the utterance audio this transcript covers ends here


@dataclass(frozen=True)
class ProsodyCue:
    """Audio-native end-of-turn hint: e.g. rising/falling final intonation, hesitation."""

    t_ms: float
    end_of_turn: float  # 0..1, how strongly prosody says the user has finished
    hint: str = ""


@dataclass(frozen=True)
class LlmDelta:
    t_ms: float
    generation: int
    text: str


@dataclass(frozen=True)
class LlmDone:
    t_ms: float
    generation: int


@dataclass(frozen=True)
class TtsAudio:
    """Audio for `text` (a clause) of a generation was synthesized; `audio_ms` long."""

    t_ms: float
    generation: int
    text: str
    audio_ms: float


@dataclass(frozen=True)
class PlaybackProgress:
    t_ms: float
    generation: int
    played_ms: float  # audio of this generation actually played so far


@dataclass(frozen=True)
class PlaybackDone:
    t_ms: float
    generation: int


@dataclass(frozen=True)
class ResponseRequested:
    """A client asked for a reply now (Realtime `response.create`, a typed message)."""

    t_ms: float
    text: str | None = None  # a typed user message, if any, already added to the history


@dataclass(frozen=True)
class CancelRequested:
    """A client cancelled the current reply (Realtime `response.cancel`)."""

    t_ms: float


@dataclass(frozen=True)
class Tick:
    t_ms: float


Event = (
    SpeechStarted
    | SpeechEnded
    | VoiceProbability
    | Transcript
    | ProsodyCue
    | LlmDelta
    | LlmDone
    | TtsAudio
    | PlaybackProgress
    | PlaybackDone
    | ResponseRequested
    | CancelRequested
    | Tick
)


# ---- actions (outputs) ----------------------------------------------------------------


@dataclass(frozen=True)
class EndOfTurn:
    """The user's turn is over. Latency is measured from `speech_end_ms`."""

    t_ms: float
    speech_end_ms: float
    text: str


@dataclass(frozen=True)
class StartGeneration:
    """Generate a reply to `user_text` (history is the session's). Speculative ones are
    synthesized but held silent until `PromoteGeneration`."""

    generation: int
    user_text: str
    speculative: bool


@dataclass(frozen=True)
class PromoteGeneration:
    generation: int


@dataclass(frozen=True)
class CancelGeneration:
    generation: int
    reason: str


@dataclass(frozen=True)
class PausePlayback:
    generation: int


@dataclass(frozen=True)
class ResumePlayback:
    generation: int


@dataclass(frozen=True)
class StopPlayback:
    """Flush every queued sample of the generation: nothing more of it is heard."""

    generation: int


@dataclass(frozen=True)
class BeginUserTurn:
    """A user turn starts with the speech that began at `audio_ms`: transcribe from there.

    Every later `Transcript` covers the turn's audio from `audio_ms` to its `audio_end_ms`
    (the whole turn so far, not one utterance), until the next `BeginUserTurn`. Speech the
    controller ignored (echo, speech over the agent with barge-in off) starts no turn."""

    audio_ms: float


@dataclass(frozen=True)
class CommitUserTurn:
    text: str


@dataclass(frozen=True)
class CommitAssistantTurn:
    """Record what the user actually heard of a generation (truncated on barge-in)."""

    generation: int
    text: str
    interrupted: bool


@dataclass(frozen=True)
class StateChanged:
    state: TurnState


@dataclass(frozen=True)
class Metric:
    """A counter or note for the turn's metrics (wasted speculation, budget breach...)."""

    name: str
    generation: int | None = None
    detail: str = ""


Action = (
    EndOfTurn
    | StartGeneration
    | PromoteGeneration
    | CancelGeneration
    | PausePlayback
    | ResumePlayback
    | StopPlayback
    | BeginUserTurn
    | CommitUserTurn
    | CommitAssistantTurn
    | StateChanged
    | Metric
)
