"""Realtime server events for replies and conversation items, with their id bookkeeping.

`Replies` turns a generation's outputs (started, clause text, audio, done) into the GA
event sequence; `Conversation` remembers items (bounded) for truncation and ordering.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cadence.agent import outputs as out
from cadence.transport.client_events import REALTIME_RATE

Event = dict[str, Any]


class EventIds:
    """Ids unique within a connection and unlikely to repeat across connections."""

    def __init__(self) -> None:
        self._salt = secrets.token_hex(4)
        self._n = 0

    def new(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_{self._salt}{self._n:06x}"

    def event(self, kind: str, **fields: Any) -> Event:
        return {"type": kind, "event_id": self.new("event"), **fields}


@dataclass
class ItemRecord:
    role: str
    generation: int | None = None
    audio_ms: float = 0.0  # assistant audio sent so far (truncate bounds)


class Conversation:
    """The items a connection knows about; the oldest are forgotten past `max_items`."""

    def __init__(self, ids: EventIds, max_items: int) -> None:
        self._ids = ids
        self._max_items = max_items
        self.records: OrderedDict[str, ItemRecord] = OrderedDict()
        self.last_item_id: str | None = None

    def __len__(self) -> int:
        return len(self.records)

    def get(self, item_id: str) -> ItemRecord | None:
        return self.records.get(item_id)

    def remember(self, item_id: str, record: ItemRecord) -> None:
        self.records[item_id] = record
        while len(self.records) > self._max_items:
            self.records.popitem(last=False)

    def added(self, item: dict[str, Any], previous: str | None = None) -> list[Event]:
        """`conversation.item.added` and `.done` for an item that is complete."""
        prev = previous if previous is not None else self.last_item_id
        self.last_item_id = item["id"]
        return [
            self._ids.event("conversation.item.added", previous_item_id=prev, item=item),
            self._ids.event("conversation.item.done", previous_item_id=prev, item=item),
        ]


@dataclass
class _Reply:
    generation: int
    response_id: str
    item_id: str
    texts: list[str] = field(default_factory=list)


class Replies:
    """One connection's responses, keyed by the session's generation ids."""

    def __init__(
        self,
        ids: EventIds,
        items: Conversation,
        config: Callable[[], dict[str, Any]],
        *,
        audio_events: bool,
        extensions: bool,
    ) -> None:
        self._ids = ids
        self._items = items
        self._config = config
        self._audio_events = audio_events
        self._extensions = extensions
        self.replies: dict[int, _Reply] = {}

    def _text_only(self) -> bool:
        return bool(self._config()["output_modalities"] == ["text"])

    @property
    def active_generation(self) -> int | None:
        return max(self.replies) if self.replies else None

    def started(self, generation: int) -> list[Event]:
        reply = _Reply(generation, self._ids.new("resp"), self._ids.new("item"))
        self.replies[generation] = reply
        self._items.remember(reply.item_id, ItemRecord("assistant", generation))
        item = self._assistant_item(reply, "in_progress", "")
        part = self._part("")
        return [
            self._ids.event("response.created", response=self._response(reply, "in_progress", [])),
            self._ids.event(
                "response.output_item.added",
                response_id=reply.response_id,
                output_index=0,
                item=item,
            ),
            *self._items.added(item)[:1],
            self._ids.event(
                "response.content_part.added",
                response_id=reply.response_id,
                item_id=reply.item_id,
                output_index=0,
                content_index=0,
                part=part,
            ),
        ]

    def _reply(self, generation: int) -> _Reply | None:
        return self.replies.get(generation)

    def text(self, item: out.ResponseText) -> list[Event]:
        reply = self._reply(item.generation)
        if reply is None or not item.text:
            return []
        joined = "".join(reply.texts)
        space = " " if joined and not joined[-1].isspace() and not item.text[0].isspace() else ""
        delta = space + item.text
        reply.texts.append(delta)
        kind = (
            "response.output_text.delta"
            if self._text_only()
            else "response.output_audio_transcript.delta"
        )
        return [
            self._ids.event(
                kind,
                response_id=reply.response_id,
                item_id=reply.item_id,
                output_index=0,
                content_index=0,
                delta=delta,
            )
        ]

    def audio(self, item: out.ResponseAudio) -> list[Event]:
        reply = self._reply(item.generation)
        if reply is None:
            return []
        record = self._items.get(reply.item_id)
        if record is not None:
            record.audio_ms += item.audio.duration_s * 1000.0
        if not self._audio_events or self._text_only():
            return []
        pcm = item.audio.to(REALTIME_RATE, dtype="int16").to_pcm16_bytes()
        return [
            self._ids.event(
                "response.output_audio.delta",
                response_id=reply.response_id,
                item_id=reply.item_id,
                output_index=0,
                content_index=0,
                delta=base64.b64encode(pcm).decode("ascii"),
            )
        ]

    def done(self, item: out.ResponseDone) -> list[Event]:
        reply = self.replies.pop(item.generation, None)
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
        if self._text_only():
            events.append(self._ids.event("response.output_text.done", **ids, text=transcript))
        else:
            events.append(self._ids.event("response.output_audio.done", **ids))
            events.append(
                self._ids.event(
                    "response.output_audio_transcript.done", **ids, transcript=transcript
                )
            )
        done_item = self._assistant_item(
            reply, "completed" if status == "completed" else "incomplete", transcript
        )
        events.append(
            self._ids.event("response.content_part.done", **ids, part=self._part(transcript))
        )
        events.append(
            self._ids.event(
                "response.output_item.done",
                response_id=reply.response_id,
                output_index=0,
                item=done_item,
            )
        )
        events.append(
            self._ids.event("conversation.item.done", previous_item_id=None, item=done_item)
        )
        response = self._response(reply, status, [done_item])
        if status != "completed":
            response["status_details"] = {"type": status, "reason": item.reason or None}
        response["metadata"] = {"latency": json.dumps(item.latency)}
        events.append(self._ids.event("response.done", response=response))
        if self._extensions:
            events.append({"type": "cadence.latency", "latency": item.latency})
        return events

    def _part(self, transcript: str) -> dict[str, Any]:
        if self._text_only():
            return {"type": "text", "text": transcript}
        return {"type": "audio", "transcript": transcript}

    def _assistant_item(self, reply: _Reply, status: str, transcript: str) -> dict[str, Any]:
        content = (
            [{"type": "output_text", "text": transcript}]
            if self._text_only()
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
        config = self._config()
        audio_out = config["audio"]["output"]
        return {
            "id": reply.response_id,
            "object": "realtime.response",
            "status": status,
            "status_details": None,
            "output": output,
            "conversation_id": config["id"].replace("sess_", "conv_"),
            "output_modalities": list(config["output_modalities"]),
            "audio": {"output": {"format": audio_out["format"], "voice": audio_out["voice"]}},
            "max_output_tokens": "inf",
            "metadata": None,
            "usage": None,
        }
