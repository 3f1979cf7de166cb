"""`cadence bench fuzz`: hostile input on every inbound surface of a running server.

Realtime events (schema-shaped, then mutated), audio and image payloads, raw frames, SDP
offers and raw HTTP requests; every case must end in an `error` event, other events or a
clean close, with the server alive and a bystander session untouched.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import random
import struct
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import websockets

SURFACE_WEIGHTS = {"event": 40, "audio": 15, "image": 10, "raw": 15, "sdp": 5, "http": 15}
PROBE_TYPE = "cadence.fuzz.probe"  # unknown to the server: answered by an `error` with its id
CLEAN_CLOSES = frozenset({1000, 1001, 1008, 1009, 1012, 1013})
HTTP_PATHS = (
    "/",
    "/static/app.js",
    "/static/../pyproject.toml",
    "/static/%2e%2e%2fsecrets",
    "/healthz",
    "/readyz",
    "/metrics",
    "/v1/realtime",
    "/v1/realtime/calls",
    "/v1/realtime/calls/rtc_0000/hangup",
    "/v1/realtime/client_secrets",
)
SDP_OFFER = (
    "v=0\r\no=- 4004605426 4004605426 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
    "a=group:BUNDLE 0 1\r\na=msid-semantic:WMS *\r\n"
    "m=audio 50056 UDP/TLS/RTP/SAVPF 96 0\r\nc=IN IP4 127.0.0.1\r\na=sendrecv\r\na=mid:0\r\n"
    "a=rtcp:9 IN IP4 0.0.0.0\r\na=rtcp-mux\r\na=ssrc:658192702 cname:fuzz\r\n"
    "a=rtpmap:96 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=candidate:1 1 udp 2130706431 127.0.0.1 50056 typ host\r\na=end-of-candidates\r\n"
    "a=ice-ufrag:r0Nn\r\na=ice-pwd:WmEuUkZj2AcNdCwCbWd4wm\r\n"
    "a=fingerprint:sha-256 21:6F:E0:BB:1C:29:22:2F:F3:B8:B4:55:48:6B:67:7E:2A:73:55:8D:FA:1A:"
    "99:CB:10:23:50:71:4D:CB:88:BE\r\na=setup:actpass\r\n"
    "m=application 57262 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 127.0.0.1\r\n"
    "a=mid:1\r\na=sctp-port:5000\r\na=max-message-size:262144\r\n"
)


@dataclass(frozen=True)
class Case:
    surface: str
    payload: str | bytes  # a WebSocket message, or an HTTP request's raw bytes / SDP body


@dataclass
class FuzzReport:
    cases: int = 0
    seconds: float = 0.0
    by_surface: Counter[str] = field(default_factory=Counter)
    outcomes: dict[str, Counter[str]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    bystander_ok: bool = False
    fresh_session_ok: bool = False
    server_alive: bool = False

    @property
    def cases_per_s(self) -> float:
        return self.cases / self.seconds if self.seconds else 0.0

    @property
    def ok(self) -> bool:
        alive = self.bystander_ok and self.fresh_session_ok and self.server_alive
        return alive and not self.failures

    def record(self, surface: str, outcome: str, failure: str | None = None) -> None:
        self.cases += 1
        self.by_surface[surface] += 1
        self.outcomes.setdefault(surface, Counter())[outcome] += 1
        if failure is not None:
            self.failures.append(f"{surface}: {outcome}: {failure}")

    def render(self) -> str:
        lines = [
            f"fuzz: {self.cases} cases in {self.seconds:.1f} s ({self.cases_per_s:.0f} cases/s)",
            f"server alive: {self.server_alive}, bystander session unaffected: "
            f"{self.bystander_ok}, fresh session after: {self.fresh_session_ok}",
            f"failures (crashes, hangs, 5xx, abnormal closes): {len(self.failures)}",
        ]
        for surface in sorted(self.outcomes):
            top = ", ".join(f"{k} {v}" for k, v in self.outcomes[surface].most_common(8))
            lines.append(f"  {surface:<6} {self.by_surface[surface]:>6}  {top}")
        lines += [f"  FAIL {f[:300]}" for f in self.failures[:20]]
        return "\n".join(lines)


# ---- cases ------------------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming `width`x`height` with a tiny body: refused by pixel count."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = zlib.compress(b"\0" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", body)
        + _png_chunk(b"IEND", b"")
    )


def _sample_images() -> list[tuple[str, bytes]]:
    from PIL import Image

    def encode(image: Any, fmt: str, **kw: Any) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, **kw)
        return buffer.getvalue()

    small = Image.new("RGB", (16, 12), (200, 30, 30))
    exif = Image.Exif()
    exif[0x010E] = "fuzz " * 200  # ImageDescription
    exif[0x0112] = 6  # orientation
    return [
        ("image/png", encode(small, "PNG")),
        ("image/jpeg", encode(small, "JPEG", exif=exif.tobytes())),
        ("image/gif", encode(small.convert("P"), "GIF")),
        ("image/bmp", encode(small, "BMP")),
        ("image/png", encode(Image.new("L", (2000, 2000)), "PNG")),  # 4 Mpx of zeros
        ("image/png", bomb_png(100_000, 100_000)),
        ("image/png", bomb_png(1, 50_000_000)),
        ("image/png", bomb_png(0, 0)),
    ]


class CaseGenerator:
    """Seeded cases: schema-shaped Realtime events, mutated, plus raw bytes, SDP and HTTP."""

    def __init__(self, seed: int = 0, *, max_message_bytes: int = 8 * 1024 * 1024) -> None:
        self.rng = random.Random(seed)
        self.max_message_bytes = max_message_bytes
        self.images = _sample_images()
        self.host = "127.0.0.1"
        self.token: str | None = None

    def case(self) -> Case:
        surfaces, weights = zip(*SURFACE_WEIGHTS.items(), strict=True)
        surface = self.rng.choices(surfaces, weights)[0]
        return Case(surface, getattr(self, f"_{surface}")())

    # -- helpers
    def _text(self, limit: int = 40) -> str:
        r = self.rng
        alphabet = 'aZ09 _-."\\/{}[]:\n\t\u00e9\u4e2d\U0001f600\u202e\x00\x7f\ud800'
        return "".join(r.choice(alphabet) for _ in range(r.randint(0, limit)))

    def _value(self, depth: int = 0) -> Any:
        r = self.rng
        pick = r.randint(0, 9 if depth < 3 else 5)
        if pick == 0:
            return None
        if pick == 1:
            return r.choice([True, False])
        if pick == 2:
            return r.choice([0, -1, 1, 2**31, -(2**63), 10**30, r.randint(-999, 99999)])
        if pick == 3:
            return r.choice([0.5, -0.0, 1e308, float("nan"), float("inf"), r.random()])
        if pick in (4, 5):
            return self._text()
        if pick in (6, 7):
            return [self._value(depth + 1) for _ in range(r.randint(0, 4))]
        return {self._text(8): self._value(depth + 1) for _ in range(r.randint(0, 4))}

    def _mutate(self, event: dict[str, Any]) -> dict[str, Any]:
        r = self.rng
        for _ in range(r.randint(1, 3)):
            target = event
            while True:  # walk into a nested dict now and then
                nested = [k for k, v in target.items() if isinstance(v, dict)]
                if not nested or r.random() < 0.5:
                    break
                target = target[r.choice(nested)]
            keys = list(target)
            action = r.randint(0, 3)
            if action == 0 and keys:
                del target[r.choice(keys)]
            elif action == 1 and keys:
                target[r.choice(keys)] = self._value()
            elif action == 2:
                target[self._text(10)] = self._value()
            else:
                target["type"] = r.choice([self._text(20), "", 7, None, "session.update "])
        return event

    def _pcm(self) -> str:
        r = self.rng
        kind = r.randint(0, 7)
        if kind == 0:
            raw = bytes(r.getrandbits(8) for _ in range(r.choice([1, 3, 479, 961])))  # odd
        elif kind == 1:
            raw = struct.pack("<f", float("nan")) * r.randint(1, 500)  # NaN bytes as PCM
        elif kind == 2:
            raw = struct.pack("<h", r.choice([-32768, 32767])) * r.randint(1, 4800)
        elif kind == 3:
            raw = b""
        elif kind == 4:  # big: near the message limit (one in 8 of these)
            raw = b"\0\1" * min(self.max_message_bytes // 3, 2_000_000)
        elif kind == 5:
            return r.choice(["!!!", "AAA", "=" * 4, "AA==AA==", self._text(30), "\u00e9\u00e9"])
        else:
            raw = bytes(r.getrandbits(8) for _ in range(2 * r.randint(1, 2400)))
        return base64.b64encode(raw).decode()

    def _image_url(self) -> str:
        r = self.rng
        mime, data = r.choice(self.images)
        kind = r.randint(0, 6)
        if kind == 1:
            data = data[: r.randint(0, len(data))]  # truncated
        elif kind == 2:
            flipped = bytearray(data)
            for _ in range(r.randint(1, 8)):
                flipped[r.randrange(len(flipped))] = r.getrandbits(8)
            data = bytes(flipped)
        elif kind == 3:
            data = bytes(r.getrandbits(8) for _ in range(r.randint(0, 300)))
        elif kind == 4:
            return r.choice(
                [
                    "https://example.com/a.png",
                    "file:///etc/passwd",
                    "data:image/png,notbase64",
                    "data:text/html;base64,PGgxPg==",
                    "data:image/png;base64,###",
                    "data:",
                ]
            )
        if kind == 5:
            mime = r.choice(["image/svg+xml", "image/x-foo", "image/"])
        return f"data:{mime};base64,{base64.b64encode(data).decode()}"

    # -- surfaces
    def _event(self) -> str:
        r = self.rng
        kind = r.randint(0, 11)
        event: dict[str, Any]
        if kind == 0:
            turn = r.choice(
                [None, {"type": "server_vad", "threshold": self._value()}, {"type": self._text()}]
            )
            fmt = {"type": r.choice(["audio/pcm", "audio/pcmu", self._text()]), "rate": 24000}
            session: dict[str, Any] = {
                "type": r.choice(["realtime", "transcription", self._text()]),
                "instructions": self._text(200),
                "audio": {"input": {"format": fmt, "turn_detection": turn}},
                "output_modalities": r.choice([["text"], ["audio"], [], self._value()]),
            }
            if r.random() < 0.3:
                session["tools"] = [{"type": "function", "name": self._text(), "parameters": {}}]
            event = {"type": "session.update", "session": session}
        elif kind in (1, 2):
            event = {"type": r.choice(["input_audio_buffer.commit", "input_audio_buffer.clear"])}
        elif kind == 3:
            content = r.choice(["input_text", "text", "output_text", self._text(10)])
            item: dict[str, Any] = {"type": "message"}
            item["role"] = r.choice(["user", "assistant", "system", "x"])
            item["content"] = [{"type": content, "text": self._text(300)}]
            event = {"type": "conversation.item.create", "item": item}
        elif kind == 4:
            item = {"type": "function_call_output", "call_id": self._text(), "output": self._text()}
            event = {"type": "conversation.item.create", "item": item}
        elif kind == 5:
            event = {
                "type": "conversation.item.truncate",
                "item_id": r.choice(["item_1", "", self._text()]),
                "content_index": 0,
                "audio_end_ms": r.choice([0, -5, 10**12, 100]),
            }
        elif kind == 6:
            response = {"instructions": self._text(), "output_modalities": ["text"]}
            event = {"type": "response.create", "response": response}
        elif kind == 7:
            event = {"type": r.choice(["response.cancel", "output_audio_buffer.clear"])}
        elif kind == 8:
            event = {"type": r.choice(["conversation.item.delete", "conversation.item.retrieve"])}
            event["item_id"] = self._text()
        else:
            event = {self._text(8): self._value() for _ in range(r.randint(0, 3))}
            event["type"] = self._text(30)
        if r.random() < 0.3:
            event["event_id"] = r.choice([self._text(), 5, None])
        if r.random() < 0.5:
            event = self._mutate(event)
        return json.dumps(event)

    def _audio(self) -> str:
        r = self.rng
        if r.random() < 0.8:
            return json.dumps({"type": "input_audio_buffer.append", "audio": self._pcm()})
        part = {"type": "input_audio", "audio": self._pcm(), "transcript": self._text()}
        item = {"type": "message", "role": "user", "content": [part]}
        return json.dumps({"type": "conversation.item.create", "item": item})

    def _image(self) -> str:
        part = {"type": "input_image", "image_url": self._image_url()}
        content: list[Any] = [part, {"type": "input_text", "text": self._text()}]
        item = {"type": "message", "role": "user", "content": content}
        return json.dumps({"type": "conversation.item.create", "item": item})

    def _raw(self) -> str | bytes:
        r = self.rng
        kind = r.randint(0, 9)
        if kind == 0:
            return bytes(r.getrandbits(8) for _ in range(r.randint(0, 200)))
        if kind == 1:
            return "[" * r.choice([100, 5000, 100_000])
        if kind == 2:
            return r.choice(["", "null", "1e99999", "[]", '"x"', "{", "NaN", '{"type":}'])
        if kind == 3:
            return json.dumps({"type": "response.create"}).encode()  # a binary frame
        if kind == 4:  # just over the message limit: an error, not a close
            pad = "x" * (self.max_message_bytes + 16)
            return json.dumps({"type": "response.cancel", "pad": pad})
        if kind == 5:
            return '{"type":"input_audio_buffer.clear","type":"response.cancel"}'
        if kind == 6:
            return json.dumps(self._value())
        return self._text(200).encode("utf-8", "replace").decode()  # a text frame is UTF-8

    def _sdp(self) -> str:
        r = self.rng
        lines = SDP_OFFER.split("\r\n")
        for _ in range(r.randint(0, 4)):
            i = r.randrange(len(lines))
            action = r.randint(0, 4)
            if action == 0:
                del lines[i]
            elif action == 1:
                lines.insert(i, lines[i])
            elif action == 2:
                lines[i] = lines[i][: r.randint(0, len(lines[i]))]
            elif action == 3:
                lines[i] = lines[i][:2] + self._text(60)
            else:
                lines.insert(i, "a=" + "x" * r.choice([10, 5000]))
        body = "\r\n".join(lines)
        if r.random() < 0.1:
            body = r.choice(["", "v=0", self._text(100), "v=0\r\n" + "m=audio\r\n" * 500])
        return body

    def _http(self) -> bytes:
        r = self.rng
        method = r.choice(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "BREW"])
        path = r.choice(HTTP_PATHS)
        if r.random() < 0.2:
            path += "?" + self._text(40).replace(" ", "%20").replace("\n", "")
        if r.random() < 0.05:
            path = "/" + "a" * r.choice([1000, 20_000])
        body = self._text(200).encode("utf-8", "surrogatepass")
        headers = {"Host": r.choice([self.host, self.host, "evil.example", ""])}
        if r.random() < 0.3:
            headers["Origin"] = r.choice([f"http://{self.host}", "http://evil.example", "null"])
        if r.random() < 0.4:
            headers["Authorization"] = r.choice(
                [f"Bearer {self.token or 'x'}", "Bearer ek_1_2_3", "Basic Zm9v", "Bearer "]
            )
        if r.random() < 0.2:
            headers["Upgrade"] = "websocket"
        headers["Content-Length"] = str(len(body))
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items() if "\n" not in v)
        request = f"{method} {path} HTTP/1.1\r\n{head}Connection: close\r\n\r\n"
        request_bytes = request.encode("utf-8", "surrogatepass")
        if r.random() < 0.1:  # not HTTP at all
            return bytes(r.getrandbits(8) for _ in range(r.randint(1, 300))) + b"\r\n\r\n"
        return request_bytes + body


# ---- running them ----------------------------------------------------------------------


@dataclass(frozen=True)
class FuzzOptions:
    cases: int = 1000
    seed: int = 0
    lanes: int = 3
    token: str | None = None
    max_message_bytes: int = 8 * 1024 * 1024
    time_limit_s: float = 600.0
    case_timeout_s: float = 15.0


def _urls(target: str) -> tuple[str, str]:
    """`ws://HOST:PORT` or `http://HOST:PORT` (any path) → (ws Realtime URL, http base)."""
    parts = urlsplit(target)
    secure = parts.scheme in ("wss", "https")
    return (
        f"{'wss' if secure else 'ws'}://{parts.netloc}/v1/realtime",
        f"{'https' if secure else 'http'}://{parts.netloc}",
    )


class _Lane:
    """One WebSocket session fed case after case; each case is followed by a probe."""

    def __init__(self, ws_url: str, token: str | None, timeout_s: float) -> None:
        self.ws_url = ws_url
        self.token = token
        self.timeout_s = timeout_s
        self.ws: Any = None
        self.probes = 0

    async def connect(self, manual: bool = True) -> None:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        self.ws = await websockets.connect(
            self.ws_url, additional_headers=headers, max_size=None, open_timeout=self.timeout_s
        )
        async with asyncio.timeout(self.timeout_s):
            created = json.loads(await self.ws.recv())
        if created.get("type") != "session.created":
            raise RuntimeError(f"expected session.created, got {str(created)[:200]}")
        if manual:  # no server VAD: random audio must not start model turns
            session = {"type": "realtime", "audio": {"input": {"turn_detection": None}}}
            update = {"type": "session.update", "session": session}
            await self.send_and_probe(json.dumps(update))

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
            self.ws = None

    async def send_and_probe(self, payload: str | bytes) -> tuple[str, str | None]:
        """(outcome, failure or None) of one message, once the probe after it is answered."""
        from websockets.exceptions import ConnectionClosed

        self.probes += 1
        probe_id = f"probe-{self.probes}"
        seen: list[str] = []
        try:
            await self.ws.send(payload)
            await self.ws.send(json.dumps({"type": PROBE_TYPE, "event_id": probe_id}))
            async with asyncio.timeout(self.timeout_s):
                while True:
                    event = json.loads(await self.ws.recv())
                    if event.get("type") != "error":
                        seen.append("events")
                        continue
                    error = event.get("error") or {}
                    if error.get("event_id") == probe_id:
                        break
                    if str(error.get("event_id")).startswith("probe-"):
                        continue  # an earlier, abandoned probe's answer
                    if error.get("code") == "rate_limit_exceeded":
                        await asyncio.sleep(0.25)  # the limit works; ask again, a little later
                        await self.ws.send(json.dumps({"type": PROBE_TYPE, "event_id": probe_id}))
                    seen.append(f"error:{error.get('code')}")
        except TimeoutError:
            await self.close()
            return "hang", f"no answer within {self.timeout_s:.0f} s to {str(payload)[:200]!r}"
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd is not None else 1006
            self.ws = None
            outcome = f"close:{code}"
            if code in CLEAN_CLOSES:
                return outcome, None
            return outcome, f"abnormal close after {str(payload)[:200]!r}"
        errors = [s for s in seen if s.startswith("error:")]
        return (errors[0] if errors else ("events" if seen else "silent")), None


async def _http_exchange(base: str, raw: bytes, timeout_s: float) -> tuple[str, str | None, bytes]:
    """(outcome, failure or None, response bytes) of one raw HTTP request."""
    parts = urlsplit(base)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(raw)
                await writer.drain()
                response = await reader.read(1 << 20)
            finally:
                writer.close()
    except TimeoutError:
        return "hang", f"no HTTP answer within {timeout_s:.0f} s to {raw[:200]!r}", b""
    except (ConnectionError, OSError):
        return "http:closed", None, b""  # the server may drop garbage: clean enough
    fields = response.split(b"\r\n", 1)[0].split()
    status = int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else 0
    if status == 0:
        return "http:closed", None, response
    if status >= 500 and status != 503:  # 503: busy or loading, a defined answer
        return f"http:{status}", f"server error for {raw[:200]!r}", response
    return f"http:{status}", None, response


async def _http_case(base: str, raw: bytes, timeout_s: float) -> tuple[str, str | None]:
    outcome, failure, _ = await _http_exchange(base, raw, timeout_s)
    return outcome, failure


async def _sdp_case(base: str, body: str, token: str | None, t: float) -> tuple[str, str | None]:
    host = urlsplit(base).netloc
    data = body.encode("utf-8", "surrogatepass")
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    head = (
        f"POST /v1/realtime/calls HTTP/1.1\r\nHost: {host}\r\n{auth}"
        f"Content-Type: application/sdp\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    )
    outcome, failure, response = await _http_exchange(base, head.encode() + data, t)
    if outcome == "http:201":  # an offer that parsed: a call now waits for ICE; hang it up
        for line in response.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"location":
                hangup = (
                    f"POST {value.strip().decode()}/hangup HTTP/1.1\r\nHost: {host}\r\n{auth}"
                    "Content-Length: 0\r\nConnection: close\r\n\r\n"
                )
                await _http_exchange(base, hangup.encode(), t)
    return outcome, failure


async def _alive(base: str, timeout_s: float) -> bool:
    host = urlsplit(base).netloc
    request = f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    outcome, _ = await _http_case(base, request, timeout_s)
    return outcome == "http:200"


async def run_fuzz(target: str, options: FuzzOptions) -> FuzzReport:
    """Run `options.cases` cases (bounded by `time_limit_s`) against a running server."""
    ws_url, base = _urls(target)
    report = FuzzReport()
    generator = CaseGenerator(options.seed, max_message_bytes=options.max_message_bytes)
    generator.host = urlsplit(base).netloc
    generator.token = options.token
    bystander = _Lane(ws_url, options.token, options.case_timeout_s)
    await bystander.connect(manual=True)
    started = time.monotonic()
    deadline = started + options.time_limit_s
    remaining = options.cases
    lock = asyncio.Lock()
    bystander_failures: list[str] = []

    async def watch_bystander() -> None:
        """Another user's session: must answer throughout (and is kept from idling out)."""
        while True:
            await asyncio.sleep(2.0)
            outcome, failure = await bystander.send_and_probe('{"type":"input_audio_buffer.clear"}')
            if outcome != "events":
                bystander_failures.append(f"bystander session: {outcome} {failure or ''}")
                return

    async def lane_loop() -> None:
        nonlocal remaining
        lane = _Lane(ws_url, options.token, options.case_timeout_s)
        try:
            while remaining > 0 and time.monotonic() < deadline:
                remaining -= 1
                async with lock:  # one generator, one seeded sequence
                    case = generator.case()
                if case.surface == "http":
                    raw = case.payload if isinstance(case.payload, bytes) else b""
                    outcome, failure = await _http_case(base, raw, options.case_timeout_s)
                elif case.surface == "sdp":
                    outcome, failure = await _sdp_case(
                        base, str(case.payload), options.token, options.case_timeout_s
                    )
                else:
                    if lane.ws is None:
                        try:
                            await lane.connect()
                        except Exception as exc:
                            report.record("session", "connect_failed", repr(exc)[:200])
                            await asyncio.sleep(0.5)
                            continue
                    outcome, failure = await lane.send_and_probe(case.payload)
                report.record(case.surface, outcome, failure)
        finally:
            await lane.close()

    watcher = asyncio.create_task(watch_bystander(), name="fuzz-bystander")
    try:
        await asyncio.gather(*(lane_loop() for _ in range(max(1, options.lanes))))
        report.seconds = time.monotonic() - started
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        if bystander.ws is not None and not bystander_failures:
            outcome, _ = await bystander.send_and_probe(json.dumps({"type": "response.cancel"}))
            report.bystander_ok = outcome == "error:invalid_request_error"
        report.failures += bystander_failures
        fresh = _Lane(ws_url, options.token, options.case_timeout_s)
        try:
            await fresh.connect(manual=True)
            outcome, _ = await fresh.send_and_probe('{"type":"input_audio_buffer.clear"}')
            report.fresh_session_ok = outcome == "events"
        except Exception as exc:
            report.failures.append(f"fresh session: {exc!r}"[:300])
        finally:
            await fresh.close()
        report.server_alive = await _alive(base, options.case_timeout_s)
    finally:
        watcher.cancel()
        await bystander.close()
    return report


# ---- the command ---------------------------------------------------------------------------


async def fuzz_command(args: Any) -> int:
    """`cadence bench fuzz`: against `--target`, or a `cadence serve` this command starts."""
    from cadence.bench.server_process import started_server

    options = FuzzOptions(
        cases=args.cases,
        seed=args.seed,
        lanes=args.lanes,
        token=args.token or None,
        time_limit_s=args.max_minutes * 60.0,
    )
    if args.target:
        report = await run_fuzz(args.target, options)
        print(report.render())
        return 0 if report.ok else 1
    async with started_server(args.config) as server:
        report = await run_fuzz(server.url, options)
        problems = server.problems()
    print(report.render())
    print(f"server process: {server.describe()}")
    for line in problems[:20]:
        print(f"  SERVER {line}")
    return 0 if report.ok and not problems else 1


def add_fuzz_parser(commands: Any) -> None:
    fuzz = commands.add_parser(
        "fuzz",
        help="hostile input on every inbound surface; the server must stay up",
        description="Realtime events (schema-shaped and mutated), audio, images, raw frames, "
        "SDP offers and HTTP requests; prints cases/s, outcomes by surface and any failure "
        "(hang, 5xx, abnormal close, exception in the server's log, lost bystander session).",
    )
    fuzz.add_argument("--cases", type=int, default=10_000, help="cases to run (default 10000)")
    fuzz.add_argument("--target", help="ws://HOST:PORT of a running server (default: start one)")
    fuzz.add_argument("--token", default=None, help="bearer token for --target")
    fuzz.add_argument("--seed", type=int, default=0)
    fuzz.add_argument("--lanes", type=int, default=3, help="concurrent fuzzing sessions")
    fuzz.add_argument("--max-minutes", type=float, default=30.0, help="time bound (default 30)")
    fuzz.add_argument("--config", help="TOML config for the started server")
    fuzz.set_defaults(handler=fuzz_command)
