"""Limits enforced at the server's edge: message size, sessions, idle time, audio, event rate.

Read from the default profile's `[profiles.NAME.limits]` table; every limit has a stated
overflow policy (an `error` event, a refused session, or a close with a reason).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from cadence.errors import ConfigError


@dataclass(frozen=True)
class ServerLimits:
    # A larger message gets an `error` event and is dropped; one past 2x this size is
    # refused by the WebSocket layer itself (close 1009), so it is never buffered whole.
    max_message_bytes: int = 8 * 1024 * 1024
    # New sessions past this get `error` + close 1013 (WebSocket) or 503 (WebRTC).
    max_sessions: int = 16
    # No client message / no media for this long: `error` event, then close 1000.
    idle_timeout_s: float = 300.0
    # Manual turns: uncommitted input audio past this is refused with an `error` event.
    max_buffered_audio_s: float = 120.0
    # Images (input_image): encoded size and decoded pixel count.
    max_image_bytes: int = 8 * 1024 * 1024
    max_image_pixels: int = 4096 * 4096
    # Conversation items a session remembers for truncate/lookup (oldest forgotten).
    max_items: int = 256
    # Ephemeral tokens minted by /v1/realtime/client_secrets live this long.
    ephemeral_ttl_s: float = 600.0
    # Latest camera/screen frames kept per call (oldest dropped).
    max_video_frames: int = 8
    # Client events per second per session, over a burst of 2 s worth: past it each event
    # is dropped with an `error` (`rate_limit_exceeded`). 20 ms audio appends are 50/s.
    max_events_per_s: float = 200.0

    @classmethod
    def from_dict(cls, table: Mapping[str, Any]) -> ServerLimits:
        known = {f.name: f.type for f in fields(cls)}
        unknown = set(table) - set(known)
        if unknown:
            raise ConfigError(
                f"[limits] has unknown keys {sorted(unknown)}; allowed: {sorted(known)}"
            )
        values: dict[str, Any] = {}
        for key, value in table.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"[limits] {key} must be a positive number, got {value!r}")
            values[key] = int(value) if known[key] in ("int", int) else float(value)
        return cls(**values)


class EventRate:
    """A token bucket: `rate_per_s` sustained, `burst` at once; sans-I/O (the caller's clock)."""

    def __init__(self, rate_per_s: float, burst: float) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._tokens = burst
        self._last_s: float | None = None

    def allow(self, now_s: float) -> bool:
        if self._last_s is not None:
            elapsed = max(0.0, now_s - self._last_s)
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate_per_s)
        self._last_s = now_s
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
