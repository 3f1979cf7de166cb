"""The OpenAI Realtime (GA) protocol, sans-I/O: client JSON in → commands; session outputs → events.

`RealtimeProtocol` holds the id bookkeeping (events, items, responses) and the session
config; it never awaits. The WebSocket handler and the WebRTC data channel both drive it.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cadence.agent import outputs as out
from cadence.errors import CadenceError, InputError, LimitExceeded, ModelError, ProtocolError
from cadence.transport import client_events as ce
from cadence.transport.limits import EventRate, ServerLimits
from cadence.transport.replies import Conversation, Event, EventIds, ItemRecord, Replies
from cadence.transport.session_config import apply_update, default_session
from cadence.transport.tool_events import ToolEvents

MIN_COMMIT_MS = 100.0  # as OpenAI: committing less than this is an error
RATE_LIMITED = "rate_limit_exceeded"  # the error code of events dropped by the rate limit
_INPUT_ERROR_CODES = frozenset(
    {
        "invalid_request_error",
        "invalid_event",
        "invalid_audio",
        "invalid_audio_file",
        "invalid_image",
        "limit_exceeded",
        "invalid_api_key",
        "invalid_config",
        RATE_LIMITED,
    }
)


@dataclass
class Step:
    """What one client message caused: commands for the session, events for the client."""

    commands: list[ce.Command] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


class RealtimeProtocol:
    """One Realtime connection's protocol state. Feed `receive()` and `on_output()`."""

    def __init__(
        self,
        *,
        model: str,
        instructions: str,
        voice: str,
        limits: ServerLimits | None = None,
        audio_events: bool = True,
        extensions: bool = False,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits or ServerLimits()
        self._monotonic = monotonic
        rate = self.limits.max_events_per_s
        self._rate = EventRate(rate, max(1.0, 2.0 * rate))
        # WebRTC sends audio as media, not deltas; its data channel carries cadence.* extras.
        self.audio_events = audio_events
        self.extensions = extensions
        self._ids = EventIds()
        self.session_id = self._id("sess")
        expires = int(wall_clock()) + 3600
        self.config = default_session(self.session_id, model, instructions, voice, expires)
        self._items = Conversation(self._ids, self.limits.max_items)
        self._tools = ToolEvents(self._ids, self._items)
        self._replies = Replies(
            self._ids,
            self._items,
            lambda: self.config,
            audio_events=audio_events,
            extensions=extensions,
        )
        self._speech_item: str | None = None
        self._committed_item: str | None = None
        self._partial = ""
        self._pending_texts: list[str] = []  # typed user texts the session will echo back
        # The final transcript of the speech item in progress, and user texts committed to
        # the client before the session committed them (see `_commit_before_response`).
        self._final: tuple[str, str] | None = None
        self._early_texts: list[str] = []
        self._buffered_ms = 0.0  # input audio since the last commit/clear
        self._audio_total_ms = 0.0  # the input audio timeline (Realtime audio_*_ms)
        self._audio_clock_ms: float | None = None

    # ---- ids and state ---------------------------------------------------------------

    def _id(self, prefix: str) -> str:
        return self._ids.new(prefix)

    def _event(self, kind: str, **fields: Any) -> Event:
        return self._ids.event(kind, **fields)

    @property
    def turn_detection(self) -> bool:
        return self.config["audio"]["input"]["turn_detection"] is not None

    @property
    def text_only(self) -> bool:
        return self.config["output_modalities"] == ["text"]

    @property
    def active_generation(self) -> int | None:
        return self._replies.active_generation

    def session_created(self) -> list[Event]:
        return [self._event("session.created", session=copy.deepcopy(self.config))]

    def error(
        self, exc: CadenceError, event_id: str | None = None, param: str | None = None
    ) -> Event:
        kind = "server_error" if isinstance(exc, ModelError) else "invalid_request_error"
        return self._error(kind, exc.code, exc.message, event_id, param)

    def _error(
        self,
        kind: str,
        code: str,
        message: str,
        event_id: str | None = None,
        param: str | None = None,
    ) -> Event:
        return self._event(
            "error",
            error={
                "type": kind,
                "code": code,
                "message": message,
                "param": param,
                "event_id": event_id,
            },
        )

    # ---- input audio timeline --------------------------------------------------------

    def note_input_audio(self, duration_ms: float, clock_ms: float) -> None:
        """Input audio reached the session at `clock_ms` (session clock)."""
        self._audio_total_ms += duration_ms
        self._audio_clock_ms = clock_ms

    def _audio_ms(self, clock_ms: float) -> int:
        """A session-clock time → ms on the input audio timeline, as Realtime reports it."""
        if self._audio_clock_ms is None:
            return 0
        behind = self._audio_clock_ms - clock_ms
        return round(min(self._audio_total_ms, max(0.0, self._audio_total_ms - behind)))

    # ---- client → server -------------------------------------------------------------

    def receive(self, raw: str | bytes) -> Step:
        if not self._rate.allow(self._monotonic()):
            # Dropped unparsed: parsing is the cost the limit bounds.
            message = (
                f"more than {self.limits.max_events_per_s:g} client events per second; "
                "this event was dropped, slow down"
            )
            return Step(events=[self._error("invalid_request_error", RATE_LIMITED, message)])
        try:
            return self._dispatch(ce.decode_event(raw, self.limits.max_message_bytes))
        except ce.Rejected as rejected:
            return Step(events=[self.error(rejected.cause, rejected.event_id, rejected.param)])

    def item_added(self, command: ce.CreateItem) -> list[Event]:
        """The transport executed a `CreateItem`: confirm it to the client."""
        self._items.remember(command.item["id"], ItemRecord(command.role))
        return self._items.added(command.item, command.previous_item_id)

    def expect_user_echo(self, text: str) -> None:
        """The session will report this typed text as a user turn: do not announce it twice."""
        self._pending_texts.append(text)
        del self._pending_texts[:-16]

    def _dispatch(self, event: dict[str, Any]) -> Step:
        kind, event_id = event["type"], event.get("event_id")
        if kind == "session.update":
            self.config, commands = apply_update(self.config, event)
            return Step(
                commands, [self._event("session.updated", session=copy.deepcopy(self.config))]
            )
        if kind == "input_audio_buffer.append":
            audio = ce.decode_pcm16(ce.field_of(event, "audio", str), event_id)
            duration_ms = audio.duration_s * 1000.0
            limit_ms = self.limits.max_buffered_audio_s * 1000.0
            if not self.turn_detection and self._buffered_ms + duration_ms > limit_ms:
                raise ce.Rejected(
                    LimitExceeded(
                        f"more than {self.limits.max_buffered_audio_s:.0f} s of uncommitted audio; "
                        "commit or clear the input buffer"
                    ),
                    event_id,
                    "audio",
                )
            self._buffered_ms += duration_ms
            return Step([ce.AppendAudio(audio)])
        if kind == "input_audio_buffer.commit":
            if self._buffered_ms < MIN_COMMIT_MS:
                raise ce.Rejected(
                    InputError(
                        f"input audio buffer holds {self._buffered_ms:.0f} ms; "
                        "commit needs at least "
                        f"{MIN_COMMIT_MS:.0f} ms"
                    ),
                    event_id,
                )
            item_id = self._speech_item or self._id("item")
            self._speech_item = self._committed_item = item_id
            self._buffered_ms = 0.0
            committed = self._event(
                "input_audio_buffer.committed",
                item_id=item_id,
                previous_item_id=self._items.last_item_id,
            )
            return Step([ce.CommitAudio(item_id)], [committed])
        if kind == "input_audio_buffer.clear":
            self._buffered_ms = 0.0
            self._speech_item = self._committed_item = None
            return Step([ce.ClearAudio()], [self._event("input_audio_buffer.cleared")])
        if kind == "conversation.item.create":
            return Step([ce.parse_item(event, self._id("item"), self.limits.max_image_bytes)])
        if kind == "conversation.item.truncate":
            return self._truncate(event)
        if kind in ("response.cancel", "output_audio_buffer.clear"):
            if self.active_generation is None:
                raise ce.Rejected(InputError("no response is in progress"), event_id)
            events = (
                [self._event("output_audio_buffer.cleared")] if kind.startswith("output") else []
            )
            return Step([ce.CancelResponse()], events)
        if kind == "response.create":
            response = ce.field_of(event, "response", dict, required=False) or {}
            instructions = response.get("instructions")
            return Step(
                [ce.RequestResponse(instructions if isinstance(instructions, str) else None)]
            )
        raise ce.Rejected(ProtocolError(f"{kind} is not supported by cadence"), event_id, "type")

    def _truncate(self, event: dict[str, Any]) -> Step:
        event_id = event.get("event_id")
        item_id = ce.field_of(event, "item_id", str)
        end_ms = ce.field_of(event, "audio_end_ms", int)
        content_index = ce.field_of(event, "content_index", int, required=False) or 0
        item = self._items.get(item_id)
        if item is None or item.generation is None:
            raise ce.Rejected(
                InputError(f"no assistant audio item {item_id[:64]!r} to truncate"),
                event_id,
                "item_id",
            )
        if end_ms < 0 or end_ms > item.audio_ms + 50:  # 50 ms: rounding in client players
            raise ce.Rejected(
                InputError(
                    f"audio_end_ms {end_ms} is outside the item's {item.audio_ms:.0f} ms of audio"
                ),
                event_id,
                "audio_end_ms",
            )
        played = min(float(end_ms), item.audio_ms)
        truncated = self._event(
            "conversation.item.truncated",
            item_id=item_id,
            content_index=content_index,
            audio_end_ms=end_ms,
        )
        return Step([ce.ReportPlayed(item.generation, played)], [truncated])

    # ---- session → client ------------------------------------------------------------

    def on_output(self, item: out.SessionOutput, now_ms: float) -> list[Event]:
        """Server events for one session output (`now_ms`: the session clock now)."""
        match item:
            case out.UserSpeechStarted():
                self._speech_item = self._speech_item or self._id("item")
                return [
                    self._event(
                        "input_audio_buffer.speech_started",
                        item_id=self._speech_item,
                        audio_start_ms=self._audio_ms(item.audio_ms),
                    )
                ]
            case out.UserSpeechStopped():
                self._speech_item = self._speech_item or self._id("item")
                stopped = self._event(
                    "input_audio_buffer.speech_stopped",
                    item_id=self._speech_item,
                    audio_end_ms=self._audio_ms(item.audio_ms),
                )
                if self.extensions:  # lets a browser place the end of speech on its own clock
                    stopped["cadence_ms_ago"] = round(max(0.0, now_ms - item.audio_ms), 1)
                return [stopped]
            case out.UserTranscript():
                return self._transcript(item)
            case out.UserTurnCommitted():
                return self._user_turn(item.text)
            case out.ResponseStarted():
                return self._commit_before_response() + self._replies.started(item.generation)
            case out.ResponseText():
                return self._replies.text(item)
            case out.ResponseAudio():
                return self._replies.audio(item)
            case out.ResponseDone():
                events = self._replies.done(item)
                return self._tools.complete_response_done(events, item.generation)
            case out.ToolCallStarted() | out.ToolCallArguments() | out.ToolCallFinished():
                reply = self._replies.replies.get(item.generation)
                return self._tools.on_output(item, reply.response_id if reply else None)
            case out.StateUpdate() if self.extensions:
                return [{"type": "cadence.state", "state": item.state}]
            case out.SessionError():
                kind = (
                    "invalid_request_error" if item.code in _INPUT_ERROR_CODES else "server_error"
                )
                return [self._error(kind, item.code, item.message)]
            case _:  # playback control, assistant commits, state without extensions
                return []

    def _commit_before_response(self) -> list[Event]:
        """Realtime clients see the user's item before the response to it. cadence commits
        a user turn when its answer is first heard (so a user who goes on talking merges into
        one turn); commit the item now, from the final transcript, and skip the later echo."""
        if self._speech_item is None or self._final is None or self._final[0] != self._speech_item:
            return []
        text = self._final[1]
        self._final = None
        events = self._user_turn(text)
        self._early_texts.append(text)
        del self._early_texts[:-16]
        return events

    def _transcript(self, item: out.UserTranscript) -> list[Event]:
        if item.final and self._speech_item is not None and item.text.strip():
            self._final = (self._speech_item, item.text.strip())
        if item.final or self._speech_item is None:
            return []
        # cadence re-transcribes the whole utterance; Realtime deltas only append, so send
        # the new tail when the partial grew and leave corrections to `.completed`. Trailing
        # punctuation is held back: the next partial often moves it ("What?" → "What is").
        text = item.text.rstrip(" .?!,;:")
        if not text.startswith(self._partial) or text == self._partial:
            return []
        delta, self._partial = text[len(self._partial) :], text
        return [
            self._event(
                "conversation.item.input_audio_transcription.delta",
                item_id=self._speech_item,
                content_index=0,
                delta=delta,
            )
        ]

    def _user_turn(self, text: str) -> list[Event]:
        if text in self._pending_texts:  # a typed item, already confirmed to the client
            self._pending_texts.remove(text)
            return []
        if text.strip() in self._early_texts:  # committed before its response started
            self._early_texts.remove(text.strip())
            return []
        item_id = self._committed_item or self._speech_item or self._id("item")
        events: list[Event] = []
        if item_id != self._committed_item:
            events.append(
                self._event(
                    "input_audio_buffer.committed",
                    item_id=item_id,
                    previous_item_id=self._items.last_item_id,
                )
            )
        self._speech_item = self._committed_item = None
        self._partial = ""
        self._buffered_ms = 0.0
        user = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "user",
            "status": "completed",
            "content": [{"type": "input_audio", "transcript": text}],
        }
        self._items.remember(item_id, ItemRecord("user"))
        added = self._items.added(user)
        completed = self._event(
            "conversation.item.input_audio_transcription.completed",
            item_id=item_id,
            content_index=0,
            transcript=text,
            usage={"type": "duration", "seconds": 0},
        )
        return [*events, added[0], completed, added[1]]
