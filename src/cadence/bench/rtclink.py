"""The WebRTC target: an aiortc caller with a simulated mic track and the `oai-events` channel.

The server paces reply audio in real time, so what arrives on the track *is* playback: the
bench records which received 20 ms frames were loud, and when.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from cadence.audio.chunk import float32_to_pcm16
from cadence.bench import links as ln
from cadence.bench.wslink import is_loopback
from cadence.errors import AuthError, CadenceError

MIC_RATE = 16_000
CHANNEL = "oai-events"
CONNECT_TIMEOUT_S = 30.0
MIC_QUEUE_FRAMES = 50  # 1 s; older frames are dropped if the peer stops pulling
QUEUE_SIZE = 4096
LOUD_RMS = 0.003  # about -50 dBFS: decoded Opus silence sits far below, speech far above
CAMERA_FPS = 5  # enough for a still scene; encoding 30 fps would steal the CPU being measured
VIDEO_CLOCK = 90_000


class _MicTrack(MediaStreamTrack):
    """The simulated user's microphone: frames pushed by the bench, pulled by aiortc."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.frames: asyncio.Queue[np.ndarray] = asyncio.Queue(MIC_QUEUE_FRAMES)
        self._pts = 0

    def push(self, frame: np.ndarray) -> None:
        if self.frames.full():
            self.frames.get_nowait()
        self.frames.put_nowait(frame)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        samples = float32_to_pcm16(await self.frames.get())
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = MIC_RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, MIC_RATE)
        self._pts += len(samples)
        return frame


class _CameraTrack(MediaStreamTrack):
    """The simulated camera: the latest picture, CAMERA_FPS times a second (black at first)."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self.pixels = np.zeros((480, 640, 3), np.uint8)
        self._start: float | None = None
        self._n = 0

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        wait = self._start + self._n / CAMERA_FPS - now
        if wait > 0:
            await asyncio.sleep(wait)
        frame = av.VideoFrame.from_ndarray(self.pixels, format="rgb24")
        frame.pts = round(self._n * VIDEO_CLOCK / CAMERA_FPS)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self._n += 1
        return frame


def _post_offer(url: str, sdp: str, token: str | None) -> tuple[int, str]:
    headers = {"Content-Type": "application/sdp"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=sdp.encode(), method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=CONNECT_TIMEOUT_S) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode(errors="replace")
    except OSError as exc:
        raise CadenceError(f"cannot reach {url}: {exc}; is the server running?") from None


class RtcLink:
    paced = True

    def __init__(self, url: str, token: str | None = None, *, video: bool = False) -> None:
        self.url = url
        self.token = token
        self._camera = _CameraTrack() if video else None
        self._pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # local ICE only
        self._mic = _MicTrack()
        self._queue: asyncio.Queue[ln.ClientEvent | None] = asyncio.Queue(QUEUE_SIZE)
        self._channel: Any = None
        self._opened = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> RtcLink:
        from cadence.transport.ice import install_host_addresses

        # aioice never gathers 127.0.0.1; a loopback call needs it as a host candidate.
        install_host_addresses(local_only=is_loopback(self.url))
        pc = self._pc
        self._channel = pc.createDataChannel(CHANNEL)
        self._channel.on("open", self._opened.set)
        self._channel.on("message", self._on_message)
        pc.addTransceiver(self._mic, direction="sendrecv")
        if self._camera is not None:
            pc.addTransceiver(self._camera, direction="sendonly")
        pc.on("track", self._on_track)
        await pc.setLocalDescription(await pc.createOffer())
        status, body = await asyncio.to_thread(
            _post_offer, self.url, pc.localDescription.sdp, self.token
        )
        if status in (401, 403):
            await pc.close()
            raise AuthError(f"{self.url} refused the token (HTTP {status}); pass --token")
        if status not in (200, 201):
            await pc.close()
            raise CadenceError(f"{self.url} refused the call (HTTP {status}): {body[:200]}")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
        try:
            await asyncio.wait_for(self._opened.wait(), CONNECT_TIMEOUT_S)
        except TimeoutError:
            await pc.close()
            raise CadenceError(f"the WebRTC call to {self.url} did not connect") from None
        self._channel.send(json.dumps(ln.session_update()))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._pc.close()
        await self._queue.put(None)

    async def send_audio(self, frame: np.ndarray) -> None:
        self._mic.push(frame)

    async def show(self, pixels: np.ndarray) -> None:
        if self._camera is not None:
            self._camera.pixels = pixels

    async def truncate(self, key: str, item: str, played_ms: float) -> None:
        """Nothing to do: the server paces the audio, so it knows what was played."""

    async def events(self) -> AsyncIterator[ln.ClientEvent]:
        while (event := await self._queue.get()) is not None:
            yield event

    def _put(self, event: ln.ClientEvent) -> None:
        with contextlib.suppress(asyncio.QueueFull):  # a stalled reader loses events, not memory
            self._queue.put_nowait(event)

    def _on_message(self, message: str | bytes) -> None:
        t = time.perf_counter()
        try:
            data = json.loads(message)
        except ValueError:
            return
        event = ln.parse_realtime(data, t) if isinstance(data, dict) else None
        if event is not None:
            self._put(event)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self._tasks.append(asyncio.create_task(self._listen(track), name="bench-rtc-audio"))

    async def _listen(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame: Any = await track.recv()
            except MediaStreamError:
                return
            t = time.perf_counter()
            data = frame.to_ndarray().astype(np.float32) / 32768.0
            rms = float(np.sqrt(np.mean(data**2))) if data.size else 0.0
            self._put(ln.PacedFrame(t, rms > LOUD_RMS))
