"""The OpenAI Realtime (GA) protocol, sans-I/O: client JSON in → commands; session outputs → events.

`RealtimeProtocol` holds the id bookkeeping (events, items, responses) and the session
config; it never awaits. The WebSocket handler and the WebRTC data channel both drive it.
"""

from __future__ import annotations

import base64
import copy
import json
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cadence.agent import outputs as out
from cadence.errors import CadenceError, InputError, LimitExceeded, ModelError, ProtocolError
from cadence.transport import client_events as ce
from cadence.transport.limits import ServerLimits
from cadence.transport.session_config import apply_update, default_session

Event = dict[str, Any]
MIN_COMMIT_MS = 100.0  # as OpenAI: committing less than this is an error
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
    }
)


@dataclass
class Step:
    """What one client message caused: commands for the session, events for the client."""

    commands: list[ce.Command] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


@dataclass
class _Reply:
    generation: int
    response_id: str
    item_id: str
    texts: list[str] = field(default_factory=list)


@dataclass
class _Item:
    role: str
    generation: int | None = None
    audio_ms: float = 0.0


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
    ) -> None:
        self.limits = limits or ServerLimits()
        # WebRTC sends audio as media, not deltas; its data channel carries cadence.* extras.
        self.audio_events = audio_events
        self.extensions = extensions
        self._salt = secrets.token_hex(4)
        self._n = 0
        self.session_id = self._id("sess")
        expires = int(wall_clock()) + 3600
        self.config = default_session(self.session_id, model, instructions, voice, expires)
        self._items: OrderedDict[str, _Item] = OrderedDict()
        self._last_item_id: str | None = None
        self._replies: dict[int, _Reply] = {}
        self._speech_item: str | None = None
        self._committed_item: str | None = None
        self._partial = ""
        self._pending_texts: list[str] = []  # typed user texts the session will echo back
        self._buffered_ms = 0.0  # input audio since the last commit/clear
        self._audio_total_ms = 0.0  # the input audio timeline (Realtime audio_*_ms)
        self._audio_clock_ms: float | None = None

    # ---- ids and state ---------------------------------------------------------------

    def _id(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_{self._salt}{self._n:06x}"

    def _event(self, kind: str, **fields: Any) -> Event:
        return {"type": kind, "event_id": self._id("event"), **fields}

    @property
    def turn_detection(self) -> bool:
        return self.config["audio"]["input"]["turn_detection"] is not None

    @property
    def text_only(self) -> bool:
        return self.config["output_modalities"] == ["text"]

    @property
    def active_generation(self) -> int | None:
        return max(self._replies) if self._replies else None

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

    def _remember(self, item_id: str, item: _Item) -> None:
        self._items[item_id] = item
        while len(self._items) > self.limits.max_items:
            self._items.popitem(last=False)

    def _added(self, item: dict[str, Any], previous: str | None = None) -> list[Event]:
        prev = previous if previous is not None else self._last_item_id
        self._last_item_id = item["id"]
        return [
            self._event("conversation.item.added", previous_item_id=prev, item=item),
            self._event("conversation.item.done", previous_item_id=prev, item=item),
        ]

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
        try:
            return self._dispatch(ce.decode_event(raw, self.limits.max_message_bytes))
        except ce.Rejected as rejected:
            return Step(events=[self.error(rejected.cause, rejected.event_id, rejected.param)])

    def item_added(self, command: ce.CreateItem) -> list[Event]:
        """The transport executed a `CreateItem`: confirm it to the client."""
        self._remember(command.item["id"], _Item(command.role))
        return self._added(command.item, command.previous_item_id)

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
                "input_audio_buffer.committed", item_id=item_id, previous_item_id=self._last_item_id
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
                return self._response_started(item.generation)
            case out.ResponseText():
                return self._response_text(item)
            case out.ResponseAudio():
                return self._response_audio(item)
            case out.ResponseDone():
                return self._response_done(item)
            case out.StateUpdate() if self.extensions:
                return [{"type": "cadence.state", "state": item.state}]
            case out.SessionError():
                kind = (
                    "invalid_request_error" if item.code in _INPUT_ERROR_CODES else "server_error"
                )
                return [self._error(kind, item.code, item.message)]
            case _:  # playback control, assistant commits, state without extensions
                return []

    def _transcript(self, item: out.UserTranscript) -> list[Event]:
        if item.final or self._speech_item is None:
            return []
        # cadence re-transcribes the whole utterance; Realtime deltas only append, so send
        # the new tail when the partial grew and leave corrections to `.completed`.
        if not item.text.startswith(self._partial) or item.text == self._partial:
            return []
        delta, self._partial = item.text[len(self._partial) :], item.text
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
        item_id = self._committed_item or self._speech_item or self._id("item")
        events: list[Event] = []
        if item_id != self._committed_item:
            events.append(
                self._event(
                    "input_audio_buffer.committed",
                    item_id=item_id,
                    previous_item_id=self._last_item_id,
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
        self._remember(item_id, _Item("user"))
        added = self._added(user)
        completed = self._event(
            "conversation.item.input_audio_transcription.completed",
            item_id=item_id,
            content_index=0,
            transcript=text,
            usage={"type": "duration", "seconds": 0},
        )
        return [*events, added[0], completed, added[1]]

    def _response_started(self, generation: int) -> list[Event]:
        reply = _Reply(generation, self._id("resp"), self._id("item"))
        self._replies[generation] = reply
        self._remember(reply.item_id, _Item("assistant", generation))
        item = self._assistant_item(reply, "in_progress", "")
        part = self._part("")
        return [
            self._event("response.created", response=self._response(reply, "in_progress", [])),
            self._event(
                "response.output_item.added",
                response_id=reply.response_id,
                output_index=0,
                item=item,
            ),
            *self._added(item)[:1],
            self._event(
                "response.content_part.added",
                response_id=reply.response_id,
                item_id=reply.item_id,
                output_index=0,
                content_index=0,
                part=part,
            ),
        ]

    def _reply(self, generation: int) -> _Reply | None:
        return self._replies.get(generation)

    def _response_text(self, item: out.ResponseText) -> list[Event]:
        reply = self._reply(item.generation)
        if reply is None or not item.text:
            return []
        joined = "".join(reply.texts)
        space = " " if joined and not joined[-1].isspace() and not item.text[0].isspace() else ""
        delta = space + item.text
        reply.texts.append(delta)
        kind = (
            "response.output_text.delta"
            if self.text_only
            else "response.output_audio_transcript.delta"
        )
        return [
            self._event(
                kind,
                response_id=reply.response_id,
                item_id=reply.item_id,
                output_index=0,
                content_index=0,
                delta=delta,
            )
        ]

    def _response_audio(self, item: out.ResponseAudio) -> list[Event]:
        reply = self._reply(item.generation)
        if reply is None:
            return []
        record = self._items.get(reply.item_id)
        if record is not None:
            record.audio_ms += item.audio.duration_s * 1000.0
        if not self.audio_events or self.text_only:
            return []
        pcm = item.audio.to(ce.REALTIME_RATE, dtype="int16").to_pcm16_bytes()
        return [
            self._event(
                "response.output_audio.delta",
                response_id=reply.response_id,
                item_id=reply.item_id,
                output_index=0,
                content_index=0,
                delta=base64.b64encode(pcm).decode("ascii"),
            )
        ]

    def _response_done(self, item: out.ResponseDone) -> list[Event]:
        reply = self._replies.pop(item.generation, None)
        if reply is None:
            return []
        transcript = "".join(reply.texts).strip() or item.text
        status = item.status
        ids = {
            "response_id": reply.response_id,
            "item_id": reply.item_id,
            "output_index": 0,
            "content_index": 0,
        }
        events: list[Event] = []
        if self.text_only:
            events.append(self._event("response.output_text.done", **ids, text=transcript))
        else:
            events.append(self._event("response.output_audio.done", **ids))
            events.append(
                self._event("response.output_audio_transcript.done", **ids, transcript=transcript)
            )
        done_item = self._assistant_item(
            reply, "completed" if status == "completed" else "incomplete", transcript
        )
        events.append(self._event("response.content_part.done", **ids, part=self._part(transcript)))
        events.append(
            self._event(
                "response.output_item.done",
                response_id=reply.response_id,
                output_index=0,
                item=done_item,
            )
        )
        events.append(self._event("conversation.item.done", previous_item_id=None, item=done_item))
        response = self._response(reply, status, [done_item])
        if status != "completed":
            response["status_details"] = {"type": status, "reason": item.reason or None}
        response["metadata"] = {"latency": json.dumps(item.latency)}
        events.append(self._event("response.done", response=response))
        if self.extensions:
            events.append({"type": "cadence.latency", "latency": item.latency})
        return events

    def _part(self, transcript: str) -> dict[str, Any]:
        if self.text_only:
            return {"type": "text", "text": transcript}
        return {"type": "audio", "transcript": transcript}

    def _assistant_item(self, reply: _Reply, status: str, transcript: str) -> dict[str, Any]:
        content = (
            [{"type": "output_text", "text": transcript}]
            if self.text_only
            else [{"type": "output_audio", "transcript": transcript}]
        )
        return {
            "id": reply.item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "assistant",
            "status": status,
            "content": content if transcript else [],
        }

    def _response(self, reply: _Reply, status: str, output: list[dict[str, Any]]) -> dict[str, Any]:
        audio_out = self.config["audio"]["output"]
        return {
            "id": reply.response_id,
            "object": "realtime.response",
            "status": status,
            "status_details": None,
            "output": output,
            "conversation_id": self.session_id.replace("sess_", "conv_"),
            "output_modalities": list(self.config["output_modalities"]),
            "audio": {"output": {"format": audio_out["format"], "voice": audio_out["voice"]}},
            "max_output_tokens": "inf",
            "metadata": None,
            "usage": None,
        }
