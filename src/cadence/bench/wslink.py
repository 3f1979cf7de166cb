"""The WebSocket target: a raw Realtime GA client, so it works against any compatible server.

Mic frames go out as `input_audio_buffer.append` (24 kHz PCM16); server events are stamped
the moment they arrive, before any parsing, so client-side latency includes the transport.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import json
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import websockets
from websockets.asyncio.client import ClientConnection, connect

from cadence.audio.chunk import StreamResampler, float32_to_pcm16
from cadence.bench import links as ln
from cadence.errors import AuthError, CadenceError

MIC_RATE = 16_000
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
OPEN_TIMEOUT_S = 20.0
QUEUE_SIZE = 4096


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WsLink:
    paced = False

    def __init__(self, url: str, token: str | None = None) -> None:
        self.url = url
        self.token = token
        self._ws: ClientConnection | None = None
        self._resampler = StreamResampler(MIC_RATE, ln.REALTIME_RATE)
        self._queue: asyncio.Queue[ln.ClientEvent | None] = asyncio.Queue(QUEUE_SIZE)
        self._reader: asyncio.Task[None] | None = None
        self._shown: int | None = None  # the picture last sent as an input_image
        self._closing = False

    async def __aenter__(self) -> WsLink:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        try:
            self._ws = await connect(
                self.url,
                additional_headers=headers,
                max_size=MAX_MESSAGE_BYTES,
                open_timeout=OPEN_TIMEOUT_S,
                compression=None,  # base64 audio barely compresses; deflate only costs CPU
                proxy=None if is_loopback(self.url) else True,
            )
        except websockets.InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                raise AuthError(
                    f"{self.url} refused the token (HTTP {status}); pass --token"
                ) from None
            raise CadenceError(f"{self.url} refused the WebSocket (HTTP {status})") from None
        except (OSError, TimeoutError, websockets.InvalidURI, websockets.InvalidHandshake) as exc:
            raise CadenceError(
                f"cannot connect to {self.url}: {exc}; is the server running?"
            ) from None
        first = json.loads(await asyncio.wait_for(self._ws.recv(), OPEN_TIMEOUT_S))
        if first.get("type") != "session.created":
            raise CadenceError(f"{self.url} did not start a Realtime session: {str(first)[:200]}")
        await self._send(ln.session_update())
        self._reader = asyncio.create_task(self._read(self._ws), name="bench-ws-reader")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closing = True
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def _send(self, event: dict[str, Any]) -> None:
        assert self._ws is not None
        with contextlib.suppress(websockets.ConnectionClosed):  # reported by the reader
            await self._ws.send(json.dumps(event, separators=(",", ":")))

    async def send_audio(self, frame: np.ndarray) -> None:
        pcm = float32_to_pcm16(self._resampler.process(frame)).astype("<i2").tobytes()
        if pcm:
            audio = base64.b64encode(pcm).decode("ascii")
            await self._send({"type": "input_audio_buffer.append", "audio": audio})

    async def show(self, pixels: np.ndarray) -> None:
        """INTERFACES: over a WebSocket, video goes as `input_image` items before the commit.

        A still camera needs one: a new item is sent only when the picture changes.
        """
        digest = hash(pixels.tobytes())
        if digest == self._shown:
            return
        self._shown = digest
        url = await asyncio.to_thread(ln.png_data_url, pixels)
        item = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_image", "image_url": url}],
        }
        await self._send({"type": "conversation.item.create", "item": item})

    async def truncate(self, key: str, item: str, played_ms: float) -> None:
        event = {
            "type": "conversation.item.truncate",
            "item_id": item,
            "content_index": 0,
            "audio_end_ms": max(0, int(played_ms)),
        }
        await self._send(event)

    async def events(self) -> AsyncIterator[ln.ClientEvent]:
        while (event := await self._queue.get()) is not None:
            yield event

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for message in ws:
                t = time.perf_counter()
                try:
                    data = json.loads(message)
                except ValueError:
                    await self._queue.put(ln.ServerError(t, "the server sent a non-JSON message"))
                    continue
                event = ln.parse_realtime(data, t) if isinstance(data, dict) else None
                if event is not None:
                    await self._queue.put(event)
        except websockets.ConnectionClosedError as exc:
            await self._queue.put(ln.ServerError(time.perf_counter(), f"connection lost: {exc}"))
        else:
            if not self._closing:  # the server hung up on us mid-trial
                reason = f"the server closed the connection ({ws.close_code} {ws.close_reason})"
                await self._queue.put(ln.ServerError(time.perf_counter(), reason))
        finally:
            await self._queue.put(None)
