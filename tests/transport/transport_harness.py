"""Transport test harness: an in-process server on 127.0.0.1:0, with fake or real sessions."""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from cadence.audio.chunk import AudioChunk
from cadence.config import Config, Profile
from cadence.transport.auth import Authenticator
from cadence.transport.context import IceSettings, ServerContext, SessionFactory
from cadence.transport.ice import install_host_addresses
from cadence.transport.limits import ServerLimits
from cadence.transport.server import ServeOptions, bound_port, make_server

TOKEN = "s3cret-test-token"
# Model-backed transport tests run on shared 2-core machines. Under load a late stage would
# trigger its degrade policy (e.g. answer from the last partial transcript), which is the
# turn controller's business and tested there; here the budgets only have to not fire.
RELAXED = {
    stage: 5000
    for stage in ("asr_final", "llm_first_token", "first_clause", "tts_first_audio", "v2v")
}
MODEL_TEST_CONFIG = Config(profiles={"default": Profile(budgets=RELAXED)})


@dataclass
class Running:
    ctx: ServerContext
    port: int

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/realtime"


@contextlib.asynccontextmanager
async def running_server(
    *,
    token: str | None = None,
    limits: ServerLimits | None = None,
    session_factory: SessionFactory | None = None,
    config: Config | None = None,
    runtime: object = None,
) -> AsyncIterator[Running]:
    """uvicorn on 127.0.0.1:0 in this loop; local-only ICE, so calls stay on loopback."""
    install_host_addresses(local_only=True)
    limits = limits or ServerLimits()
    ctx = ServerContext(
        config or Config(),
        Authenticator(token, ephemeral_ttl_s=limits.ephemeral_ttl_s),
        limits,
        IceSettings(local_only=True),
        session_factory=session_factory,
        runtime=runtime,
    )
    ctx.mark_ready()
    server = make_server(ctx, ServeOptions(port=0), handle_signals=False)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield Running(ctx, bound_port(server))
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


@dataclass
class HttpResponse:
    status: int
    text: str
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.text)


async def http(
    method: str, url: str, body: str | bytes | None = None, headers: dict[str, str] | None = None
) -> HttpResponse:
    """A plain HTTP request (stdlib, in a thread); error statuses are returned, not raised."""

    def call() -> HttpResponse:
        data = body.encode() if isinstance(body, str) else body
        request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return HttpResponse(
                    response.status, response.read().decode(), dict(response.headers)
                )
        except urllib.error.HTTPError as exc:
            return HttpResponse(exc.code, exc.read().decode(), dict(exc.headers))

    return await asyncio.to_thread(call)


class AudioSource(MediaStreamTrack):
    """A microphone for aiortc clients: plays a chunk (48 kHz) at real time, then silence."""

    kind = "audio"

    def __init__(self, audio: AudioChunk | None = None, lead_silence_s: float = 0.3) -> None:
        super().__init__()
        samples = (
            np.zeros(0, np.int16)
            if audio is None
            else audio.to(48_000, dtype="int16").samples[:, 0]
        )
        lead = np.zeros(int(lead_silence_s * 48_000), np.int16)
        self._samples = np.concatenate([lead, samples])
        self._pos = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self._pos / 48_000 - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        chunk = self._samples[self._pos : self._pos + 960]
        frame_data = np.zeros(960, np.int16)
        frame_data[: len(chunk)] = chunk
        frame = av.AudioFrame.from_ndarray(frame_data.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = 48_000
        frame.pts = self._pos
        frame.time_base = fractions.Fraction(1, 48_000)
        self._pos += 960
        return frame


@dataclass
class RtcClient:
    """An aiortc caller: what it heard and what the data channel said."""

    pc: RTCPeerConnection
    channel: Any
    events: list[dict[str, Any]] = field(default_factory=list)
    loud_samples: int = 0
    frames: int = 0
    first_loud_s: float | None = None
    heard: list[np.ndarray] = field(default_factory=list)  # mono int16 at 48 kHz
    _reader: asyncio.Task[None] | None = None

    def heard_audio(self) -> AudioChunk:
        data = np.concatenate(self.heard) if self.heard else np.zeros(0, np.int16)
        return AudioChunk(data.reshape(-1, 1), 48_000)

    def voiced_s(self) -> float:
        """Seconds of received 20 ms frames with speech-like energy."""
        return sum(0.02 for f in self.heard if np.sqrt(np.mean(f.astype(np.float64) ** 2)) > 300)

    def types(self) -> list[str]:
        return [e.get("type", "") for e in self.events]

    async def wait_for(self, kind: str, within_s: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            for event in self.events:
                if event.get("type") == kind:
                    return event
            await asyncio.sleep(0.02)
        raise AssertionError(f"no {kind} within {within_s} s; saw {self.types()}")

    def send(self, event: dict[str, Any]) -> None:
        self.channel.send(json.dumps(event))

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        await self.pc.close()


async def rtc_call(
    base: str,
    audio: AudioChunk | None = None,
    *,
    token: str | None = None,
    video: MediaStreamTrack | None = None,
) -> RtcClient:
    """Place a WebRTC call to `POST {base}/v1/realtime/calls` over loopback."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    channel = pc.createDataChannel("oai-events")
    client = RtcClient(pc, channel)
    channel.on("message", lambda m: client.events.append(json.loads(m)))
    pc.addTransceiver(AudioSource(audio), direction="sendrecv")
    if video is not None:
        pc.addTrack(video)

    async def read(track: MediaStreamTrack) -> None:
        t0 = time.monotonic()
        while True:
            try:
                frame = await track.recv()
            except Exception:
                return
            data = frame.to_ndarray()
            channels = len(frame.layout.channels)  # packed: samples of all channels in one row
            loud = int(np.count_nonzero(np.abs(data.astype(np.int32)) > 1000)) // channels
            client.frames += 1
            if len(client.heard) < 30 * 50:  # keep 30 s at most
                client.heard.append(data.reshape(-1, channels)[:, 0].astype(np.int16))
            client.loud_samples += loud
            if loud and client.first_loud_s is None:
                client.first_loud_s = time.monotonic() - t0

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            client._reader = asyncio.ensure_future(read(track))

    await pc.setLocalDescription(await pc.createOffer())
    headers = {"Content-Type": "application/sdp"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    response = await http("POST", f"{base}/v1/realtime/calls", pc.localDescription.sdp, headers)
    if response.status != 201:
        await pc.close()
        raise AssertionError(f"call refused: {response.status} {response.text}")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=response.text, type="answer"))
    return client
