"""Joins a `RealtimeProtocol` to a Session: executes commands, pumps outputs back as events.

Shared by the WebSocket handler and the WebRTC data channel. Every `CadenceError` a
command raises becomes an `error` event; the session goes on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from cadence.agent import outputs as out
from cadence.audio.chunk import AudioChunk
from cadence.errors import CadenceError, ModelError
from cadence.transport import client_events as ce
from cadence.transport.images import load_client_image
from cadence.transport.metrics import Metrics
from cadence.transport.protocol import Event, RealtimeProtocol
from cadence.transport.tool_events import SetTools

log = logging.getLogger(__name__)
ASR_RATE = 16_000

Send = Callable[[list[Event]], Awaitable[None]]
OutputHook = Callable[[out.SessionOutput], None]


class ClockLike(Protocol):
    def now_ms(self) -> float: ...


class SessionLike(Protocol):
    """What a transport needs of `cadence.agent.session.Session` (fakes implement it in tests)."""

    clock: Any

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    def events(self) -> AsyncIterator[out.SessionOutput]: ...
    def push_audio(self, chunk: AudioChunk) -> None: ...
    def add_user_text(self, text: str) -> None: ...
    def request_response(self, text: str | None = None) -> None: ...
    def commit_audio(self) -> None: ...
    def clear_audio(self) -> None: ...
    def cancel_response(self) -> None: ...
    def report_played(self, generation: int, played_ms: float) -> None: ...


class SessionAdapter:
    """Session capabilities the Realtime protocol needs beyond `SessionLike`.

    Each uses the session's own method when it has one, else a documented fallback on its
    public attributes, so the transport works with the Session as it is today.
    """

    def __init__(self, session: SessionLike) -> None:
        self.session = session

    def set_tools(self, command: SetTools) -> None:
        if hook := self._hook("set_tools"):
            hook(list(command.tools), command.choice)

    def _hook(self, name: str) -> Callable[..., Any] | None:
        hook = getattr(self.session, name, None)
        return hook if callable(hook) else None

    def set_turn_detection(self, enabled: bool) -> None:
        if hook := self._hook("set_turn_detection"):
            hook(enabled)
            return
        session: Any = self.session
        options = getattr(session, "options", None)
        if dataclasses.is_dataclass(options) and not isinstance(options, type):
            session.options = dataclasses.replace(options, turn_detection=enabled)

    def set_instructions(self, instructions: str) -> None:
        if hook := self._hook("set_instructions"):
            hook(instructions)
            return
        session: Any = self.session
        profile = getattr(session, "profile", None)
        if profile is not None and hasattr(profile, "with_instructions"):
            session.profile = profile.with_instructions(instructions)

    def add_history(self, role: str, text: str) -> bool:
        """Add a message without asking for a reply; False if the session cannot."""
        if hook := self._hook("add_history_item"):
            hook(role, text)
            return True
        history = getattr(self.session, "history", None)
        if history is None or role not in ("user", "assistant"):
            return False
        (history.add_user if role == "user" else history.add_assistant)(text)
        return True

    def add_image(self, png: bytes) -> bool:
        """A validated still image (PNG) for the session's vision; False if it has none."""
        if hook := self._hook("add_image"):
            hook(png)
            return True
        return False  # a session without vision: the item list keeps it

    def add_function_output(self, call_id: str, output: str) -> bool:
        if hook := self._hook("add_function_output"):
            hook(call_id, output)
            return True
        return False

    async def transcribe(self, audio: AudioChunk) -> str:
        if hook := self._hook("transcribe"):
            return str(await hook(audio))
        runtime = getattr(self.session, "runtime", None)
        asr = getattr(runtime, "asr", None)
        if asr is None:
            return ""
        samples = audio.to(ASR_RATE).mono_f32()
        result = await asyncio.to_thread(asr.transcribe, samples)
        return str(getattr(result, "text", result))


class RealtimeBridge:
    """One connection: client messages → session; session outputs → client events."""

    def __init__(
        self,
        session: SessionLike,
        protocol: RealtimeProtocol,
        send: Send,
        *,
        metrics: Metrics | None = None,
        transport: str = "websocket",
        on_output: OutputHook | None = None,
    ) -> None:
        self.session = session
        self.adapter = SessionAdapter(session)
        self.protocol = protocol
        self._send = send
        self.metrics = metrics or Metrics()
        self.transport = transport
        self._on_output = on_output
        self._send_lock = asyncio.Lock()  # keeps a step's events together and in order

    def now_ms(self) -> float:
        return float(self.session.clock.now_ms())

    async def send(self, events: list[Event]) -> None:
        if not events:
            return
        for event in events:
            if event.get("type") == "error":
                self.metrics.inc("cadence_errors_total", code=str(event["error"]["code"]))
        async with self._send_lock:
            await self._send(events)

    def push_audio(self, chunk: AudioChunk) -> None:
        self.session.push_audio(chunk)
        self.protocol.note_input_audio(chunk.duration_s * 1000.0, self.now_ms())

    async def handle(self, raw: str | bytes) -> None:
        """One client message."""
        self.metrics.inc("cadence_client_events_total", transport=self.transport)
        step = self.protocol.receive(raw)
        await self.send(step.events)
        for command in step.commands:
            try:
                events = await self._apply(command)
            except CadenceError as exc:
                event_id = command.event_id if isinstance(command, ce.CreateItem) else None
                events = [self.protocol.error(exc, event_id)]
            except Exception:  # a bug below must cost this event, never the session
                log.exception("%s failed", type(command).__name__)
                events = [
                    self.protocol.error(ModelError(f"{type(command).__name__} failed; try again"))
                ]
            await self.send(events)

    async def _apply(self, command: ce.Command) -> list[Event]:
        session = self.session
        match command:
            case ce.AppendAudio():
                self.push_audio(command.audio)
            case ce.CommitAudio():
                session.commit_audio()
            case ce.ClearAudio():
                session.clear_audio()
            case ce.SetTurnDetection():
                self.adapter.set_turn_detection(command.enabled)
            case ce.SetInstructions():
                self.adapter.set_instructions(command.instructions)
            case ce.ReportPlayed():
                session.report_played(command.generation, command.played_ms)
            case ce.RequestResponse():
                session.request_response()
            case ce.CancelResponse():
                session.cancel_response()
            case ce.CreateItem():
                return await self._create_item(command)
            case SetTools():
                self.adapter.set_tools(command)
        return []

    async def _create_item(self, command: ce.CreateItem) -> list[Event]:
        limits = self.protocol.limits
        if command.kind == "image" and command.image is not None:
            image = await asyncio.to_thread(
                load_client_image,
                command.image,
                max_bytes=limits.max_image_bytes,
                max_pixels=limits.max_image_pixels,
            )
            self.adapter.add_image(image.png)
            if command.text:
                self.adapter.add_history(command.role, command.text)
        elif command.kind == "audio" and command.audio is not None:
            text = await self.adapter.transcribe(command.audio)
            for part in command.item.get("content", []):
                if part.get("type") == "input_audio":
                    part["transcript"] = text
            if text:
                self.adapter.add_history(command.role, text)
        elif command.kind == "text":
            if not self.adapter.add_history(command.role, command.text) and command.role == "user":
                # No history access: fall back to the session's own typed-text path.
                self.protocol.expect_user_echo(command.text)
                self.session.add_user_text(command.text)
        elif command.kind == "function_call_output":
            self.adapter.add_function_output(command.call_id, command.text)
        return self.protocol.item_added(command)

    async def pump(self) -> None:
        """Forward session outputs until the session ends."""
        async for item in self.session.events():
            if self._on_output is not None:
                self._on_output(item)
            if isinstance(item, out.ResponseDone):
                self.metrics.inc("cadence_responses_total", status=item.status)
                v2v = item.latency.get("v2v")
                if isinstance(v2v, int | float):
                    self.metrics.observe_v2v(float(v2v))
            await self.send(self.protocol.on_output(item, self.now_ms()))
