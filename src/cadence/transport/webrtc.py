"""WebRTC calls with aiortc: SDP offer → answer, mic → session, paced agent audio → browser.

The `oai-events` data channel speaks the same Realtime protocol as the WebSocket (minus
audio deltas) plus `cadence.state` / `cadence.latency`. A call owns its session and peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections import deque
from typing import Any

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from cadence.agent import outputs as out
from cadence.config import Profile
from cadence.errors import CadenceError, LimitExceeded, ProtocolError
from cadence.transport.bridge import RealtimeBridge
from cadence.transport.context import ServerContext, SessionLease
from cadence.transport.ice import keep_loopback_candidates, rtc_configuration
from cadence.transport.media import (
    AgentAudioTrack,
    VideoFrameBuffer,
    audio_frame_to_chunk,
    frame_time_s,
    listen_without_prefetch,
    to_cadence_frame,
)
from cadence.transport.protocol import Event, RealtimeProtocol

log = logging.getLogger(__name__)
CHANNEL_LABEL = "oai-events"
CONNECT_TIMEOUT_S = 30.0
CLOSE_TIMEOUT_S = 5.0
DEFAULT_VIDEO_FPS = 4.0  # frames handed to a session whose vision does not say
MAX_SDP_BYTES = 64 * 1024
INBOX_SIZE = 256  # client events waiting to be handled; past it they are refused
PENDING_SIZE = 256  # server events waiting for the data channel to open; oldest dropped


class Call:
    """One WebRTC call: a peer connection, a session, and the tasks that join them."""

    def __init__(
        self, ctx: ServerContext, pc: RTCPeerConnection, profile: Profile, lease: SessionLease
    ) -> None:
        self.id = "rtc_" + secrets.token_hex(12)
        self.ctx = ctx
        self.pc = pc
        self.lease = lease
        self.session = ctx.new_session(profile, True)
        self.protocol = RealtimeProtocol(
            model=profile.name,
            instructions=profile.instructions,
            voice=profile.voice,
            limits=ctx.limits,
            audio_events=False,
            extensions=True,
        )
        self.audio_out = AgentAudioTrack(self.session.report_played)
        self.video = VideoFrameBuffer(ctx.limits.max_video_frames)
        self.bridge = RealtimeBridge(
            self.session,
            self.protocol,
            self._send_events,
            metrics=ctx.metrics,
            transport="webrtc",
            on_output=self._on_output,
        )
        self._channel: Any = None
        self._pending: deque[str] = deque(maxlen=PENDING_SIZE)
        self._inbox: asyncio.Queue[str | bytes] = asyncio.Queue(INBOX_SIZE)
        self._tracks: list[MediaStreamTrack] = []
        self._connected = asyncio.Event()
        self.ended = asyncio.Event()
        self.end_reason = ""
        self._closed = False
        pc.on("track", self._tracks.append)
        pc.on("datachannel", self._attach_channel)
        pc.on("connectionstatechange", self._state_changed)

    # ---- peer events -----------------------------------------------------------------

    def _state_changed(self) -> None:
        state = self.pc.connectionState
        if state == "connected":
            self._connected.set()
        elif state in ("failed", "closed"):
            self.end(f"peer connection {state}")

    def end(self, reason: str) -> None:
        if not self.ended.is_set():
            self.end_reason = reason
            self.ended.set()

    def _attach_channel(self, channel: Any) -> None:
        if channel.label != CHANNEL_LABEL or self._channel is not None:
            return
        self._channel = channel
        channel.on("open", self._flush)
        channel.on("message", self._on_message)
        channel.on("close", lambda: self.end("data channel closed"))
        if channel.readyState == "open":
            self._flush()

    def _flush(self) -> None:
        while self._pending and self._channel is not None and self._channel.readyState == "open":
            self._channel.send(self._pending.popleft())

    def _on_message(self, message: str | bytes) -> None:
        try:
            self._inbox.put_nowait(message)
        except asyncio.QueueFull:
            error = self.protocol.error(LimitExceeded("too many client events queued; slow down"))
            self._pending.append(json.dumps(error))
            self._flush()

    async def _send_events(self, events: list[Event]) -> None:
        for event in events:
            self._pending.append(json.dumps(event, separators=(",", ":")))
        self._flush()

    def _on_output(self, item: out.SessionOutput) -> None:
        if isinstance(item, out.ResponseAudio):
            self.audio_out.enqueue(item.generation, item.audio)
        elif isinstance(item, out.PlaybackControl):
            self.audio_out.control(item.generation, item.command)

    # ---- the call's lifetime ---------------------------------------------------------

    async def run(self, profile_error: CadenceError | None) -> None:
        """Until hang-up, failure, idleness or shutdown; always closes everything."""
        try:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    await self._connected.wait()
            except TimeoutError:
                self.end("ICE did not connect")
                return
            await self.session.start()
            await self._send_events(self.protocol.session_created())
            if profile_error is not None:
                await self._send_events([self.protocol.error(profile_error)])
            async with asyncio.TaskGroup() as group:
                workers = [group.create_task(self._read_inbox())]
                for track in self._tracks:
                    reader = self._read_audio if track.kind == "audio" else self._read_video
                    workers.append(group.create_task(reader(track)))
                pump = group.create_task(self.bridge.pump())
                await self.ended.wait()
                await self.session.close()  # ends the pump
                for task in workers:
                    task.cancel()
                await pump
        finally:
            log.info("call %s ended: %s", self.id, self.end_reason or "cancelled")
            await self.close()

    async def _read_inbox(self) -> None:
        while True:
            await self.bridge.handle(await self._inbox.get())

    async def _read_audio(self, track: MediaStreamTrack) -> None:
        idle_s = self.ctx.limits.idle_timeout_s
        while True:
            try:
                # asyncio.timeout, not wait_for: 3.11's wait_for swallows a cancellation
                # that lands as a frame arrives, and this loop would never stop.
                async with asyncio.timeout(idle_s):
                    frame = await track.recv()
            except TimeoutError:
                self.end(f"no microphone audio for {idle_s:.0f} s")
                return
            except MediaStreamError:
                self.end("microphone track ended")
                return
            self.bridge.push_audio(audio_frame_to_chunk(frame))

    async def _read_video(self, track: MediaStreamTrack) -> None:
        push_frame = getattr(self.session, "push_frame", None)
        # Converting to RGB costs CPU: do it only as often as the session keeps frames.
        vision = getattr(getattr(self.session, "vision", None), "frames", None)
        fps = float(getattr(vision, "ingest_fps", DEFAULT_VIDEO_FPS))
        last_s = float("-inf")
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self.video.push(frame)
            t_s = frame_time_s(frame)
            if callable(push_frame) and t_s - last_s >= 1.0 / fps:
                last_s = t_s
                push_frame(to_cadence_frame(frame))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.end(self.end_reason or "closed")
        await self.session.close()
        self.audio_out.stop()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self.pc.close()
        self.lease.release()
        self.ctx.calls.pop(self.id, None)


async def answer_call(ctx: ServerContext, offer_sdp: str, model: str | None) -> Call:
    """Answer an SDP offer; the returned call runs as a task owned by `ctx`."""
    if (
        not offer_sdp.strip()
        or len(offer_sdp) > MAX_SDP_BYTES
        or not offer_sdp.lstrip().startswith("v=0")
    ):
        raise ProtocolError("the body must be an SDP offer (starting with v=0, at most 64 KiB)")
    if ctx.ice.local_only:
        offer_sdp = keep_loopback_candidates(offer_sdp)
    profile, profile_error = ctx.profile_for(model)
    lease = ctx.lease("webrtc")
    pc = RTCPeerConnection(rtc_configuration(ctx.ice.servers))
    try:
        call = Call(ctx, pc, profile, lease)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        except Exception as exc:  # aiortc raises ValueError, KeyError, … for malformed SDP
            raise ProtocolError(
                f"invalid SDP offer: {type(exc).__name__}: {str(exc)[:200]}"
            ) from None
        if not any(t.kind == "audio" for t in pc.getTransceivers()):
            raise ProtocolError("the SDP offer has no audio section; a call needs the microphone")
        listen_without_prefetch(pc)
        pc.addTrack(call.audio_out)
        try:
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:  # offers aiortc parses but cannot answer (e.g. a lost BUNDLE)
            raise ProtocolError(
                f"cannot answer this SDP offer: {type(exc).__name__}: {str(exc)[:200]}"
            ) from None
    except BaseException:
        with contextlib.suppress(Exception):
            await pc.close()
        lease.release()
        raise
    ctx.calls[call.id] = call
    task = asyncio.create_task(call.run(profile_error), name=f"call-{call.id}")
    ctx.track(task)
    return call
