"""Text-to-speech on a remote engine over OpenAI's `/v1/audio/speech`, PCM streamed back.

Same shape as the embedded `PiperTTS` (sync, for worker threads): audio chunks as they arrive.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

import httpx2
import numpy as np

from cadence.audio.chunk import StreamResampler
from cadence.errors import ConfigError, ModelError
from cadence.net.client import Engine, EngineOptions

OPENAI_PCM_RATE = 24_000  # OpenAI's `pcm`: 24 kHz, 16-bit signed little-endian, mono
_WAV_HEADER_LIMIT = 4096  # a RIFF header longer than this is not one we can stream


@dataclass(frozen=True)
class HttpTtsOptions(EngineOptions):
    """`[tts] backend = "openai"`: a server speaking `/v1/audio/speech` (`response_format=pcm`).

    `sample_rate` is the PCM rate the engine sends; OpenAI and most open servers send 24 kHz.
    A server that answers with a WAV file instead is read from its header.
    """

    model: str = "tts-1"
    voice: str = "alloy"
    speed: float = 1.0
    instructions: str | None = None  # style prompt, for engines that take one
    sample_rate: int = OPENAI_PCM_RATE
    chunk_ms: int = 40  # smallest chunk handed on: fewer, larger pieces for the resampler

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.25 <= self.speed <= 4.0:
            raise ConfigError(f"[tts] speed {self.speed} is outside 0.25..4.0")
        if not 8_000 <= self.sample_rate <= 48_000:
            raise ConfigError(f"[tts] sample_rate {self.sample_rate} is outside 8000..48000")
        if self.chunk_ms < 1:
            raise ConfigError(f"[tts] chunk_ms {self.chunk_ms} must be >= 1")


class _PcmDecoder:
    """Bytes of 16-bit mono PCM (or a streamed WAV) in, float32 chunks at `out_rate` out."""

    def __init__(self, out_rate: int, chunk_samples: int) -> None:
        self._out_rate = out_rate
        self._chunk = chunk_samples
        self._pending = b""
        self._sniffed = False
        self._header = False  # a WAV whose "data" chunk is not reached yet
        self._resampler: StreamResampler | None = None
        self._held: list[np.ndarray] = []
        self._held_samples = 0

    def feed(self, raw: bytes) -> Iterator[np.ndarray]:
        self._pending += raw
        if not self._sniffed:
            if len(self._pending) < 4:
                return
            # Some servers ignore response_format=pcm and send a WAV: sniff, don't trust
            # content-type (raw PCM that opens with the bytes "RIFF" would be a loud click).
            self._sniffed = True
            self._header = self._pending[:4] == b"RIFF"
        if self._header and not self._parse_header():
            return
        usable = len(self._pending) - len(self._pending) % 2  # a sample may straddle reads
        if not usable:
            return
        pcm = np.frombuffer(self._pending[:usable], dtype="<i2")
        self._pending = self._pending[usable:]
        audio = pcm.astype(np.float32) / 32768.0
        if self._resampler is not None:
            audio = self._resampler.process(audio)
        self._held.append(audio)
        self._held_samples += len(audio)
        if self._held_samples >= self._chunk:
            yield self._take()

    def flush(self) -> Iterator[np.ndarray]:
        if not self._sniffed:  # the whole answer was under 4 bytes: raw PCM, a sample or two
            self._sniffed = True
            yield from self.feed(b"")
        if self._header:
            raise ModelError("the TTS engine's WAV answer ended inside its header")
        if self._resampler is not None:
            self._held.append(self._resampler.process(np.zeros(0, np.float32), last=True))
            self._held_samples += len(self._held[-1])
        if self._held_samples:
            yield self._take()

    def _take(self) -> np.ndarray:
        out = np.concatenate(self._held) if len(self._held) > 1 else self._held[0]
        self._held, self._held_samples = [], 0
        return out

    def _parse_header(self) -> bool:
        """Skip a RIFF/WAVE header (streamed WAVs carry a bogus size); False: need more."""
        buf = self._pending
        if len(buf) < 12:
            return False
        if buf[:4] != b"RIFF" or buf[8:12] != b"WAVE":
            raise ModelError("the TTS engine sent neither raw PCM nor a WAV file")
        pos, rate = 12, None
        while pos + 8 <= len(buf):
            tag, size = buf[pos : pos + 4], struct.unpack("<I", buf[pos + 4 : pos + 8])[0]
            if tag == b"data":
                if rate is None:
                    raise ModelError("the TTS engine's WAV has no fmt chunk before its data")
                self._pending = buf[pos + 8 :]
                self._header = False
                if rate != self._out_rate:
                    self._resampler = StreamResampler(rate, self._out_rate)
                return True
            if tag == b"fmt ":
                if pos + 8 + 16 > len(buf):
                    return False
                fmt, channels, rate, _, _, bits = struct.unpack("<HHIIHH", buf[pos + 8 : pos + 24])
                if fmt != 1 or channels != 1 or bits != 16:
                    raise ModelError(
                        f"the TTS engine's WAV is format {fmt}, {channels} channels, {bits} bit; "
                        "only 16-bit PCM mono can be streamed: ask for response_format=pcm"
                    )
            pos += 8 + size + size % 2
        if len(buf) > _WAV_HEADER_LIMIT:
            raise ModelError("the TTS engine's WAV header is too long to stream")
        return False


class HttpTTS:
    """Synthesize a clause on the engine as float32 mono audio at `sample_rate`, streamed."""

    def __init__(self, options: HttpTtsOptions) -> None:
        self.options = options
        self.sample_rate: int = options.sample_rate
        self._engine = Engine(options, "TTS engine")
        self._url = self._engine.url("audio/speech")

    def stream(self, text: str) -> Iterator[np.ndarray]:
        """Yield audio for `text` as the engine sends it; closing the iterator hangs up."""
        if not text.strip():
            return
        o = self.options
        body: dict[str, object] = {
            "model": o.model,
            "input": text,
            "voice": o.voice,
            "response_format": "pcm",
            "speed": o.speed,
        }
        if o.instructions:
            body["instructions"] = o.instructions
        response = self._engine.open_sync("POST", self._url, json=body)
        try:
            decoder = _PcmDecoder(self.sample_rate, max(1, self.sample_rate * o.chunk_ms // 1000))
            for raw in response.iter_bytes():
                yield from decoder.feed(raw)
            yield from decoder.flush()
        except httpx2.HTTPError as exc:
            raise self._engine.transport_error(exc, self._url) from None
        finally:
            response.close()

    def synthesize(self, text: str) -> np.ndarray:
        parts = list(self.stream(text))
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def warm(self) -> None:
        """One short request: fails now (BackendUnavailable) if the engine is down."""
        self.synthesize("Hello.")

    def close(self) -> None:
        self._engine.close()
