"""Where playback of the audible generation is, on the session clock.

Over WebRTC the server paces audio in real time, so this model *is* the playback position;
over the WebSocket a client's `conversation.item.truncate` overrides it (INTERFACES.md).
"""

from __future__ import annotations


class Playout:
    """Advances at 1x while playing and audio is queued; stalls on underrun and on pause."""

    def __init__(self) -> None:
        self.generation: int | None = None
        self.produced_ms = 0.0
        self.played_ms = 0.0
        self.paused = False
        self._last_t: float | None = None

    def start(self, generation: int, t_ms: float) -> None:
        self.generation = generation
        self.produced_ms = 0.0
        self.played_ms = 0.0
        self.paused = False
        self._last_t = t_ms

    def add(self, generation: int, audio_ms: float) -> None:
        if generation == self.generation:
            self.produced_ms += audio_ms

    def advance(self, t_ms: float) -> float:
        """Move the position to `t_ms` and return it."""
        if self._last_t is not None and not self.paused and self.generation is not None:
            dt = max(0.0, t_ms - self._last_t)
            self.played_ms = min(self.produced_ms, self.played_ms + dt)
        self._last_t = t_ms
        return self.played_ms

    def pause(self, t_ms: float) -> None:
        self.advance(t_ms)
        self.paused = True

    def resume(self, t_ms: float) -> None:
        self._last_t = t_ms
        self.paused = False

    def report_played(self, generation: int, played_ms: float) -> None:
        """A client said how much it played (WebSocket truncate): trust it, within bounds."""
        if generation == self.generation:
            self.played_ms = max(0.0, min(self.produced_ms, played_ms))

    def stop(self) -> None:
        self.generation = None
        self._last_t = None

    @property
    def remaining_ms(self) -> float:
        return max(0.0, self.produced_ms - self.played_ms)
