"""The simulated user's ears: when agent audio was actually playing, as wall-clock intervals.

Pushed audio (WebSocket, in-process) arrives faster than real time and is played by a
virtual player that can pause; paced audio (WebRTC) plays as it arrives.
"""

from __future__ import annotations

from dataclasses import dataclass

MERGE_GAP_S = 0.3  # pauses shorter than this (between clauses) are still "the agent talking"
FRAME_S = 0.02


@dataclass(frozen=True)
class Interval:
    start: float
    end: float
    key: str = ""  # the response it belonged to ("" when unknown: paced audio)


def merged(intervals: list[Interval], gap_s: float = MERGE_GAP_S) -> list[Interval]:
    """Join intervals of the same response separated by less than `gap_s`."""
    out: list[Interval] = []
    for iv in sorted(intervals, key=lambda i: i.start):
        if out and out[-1].key == iv.key and iv.start - out[-1].end < gap_s:
            out[-1] = Interval(out[-1].start, max(out[-1].end, iv.end), iv.key)
        else:
            out.append(iv)
    return out


class PushedPlayer:
    """Plays one response at a time in simulated real time; underruns leave silent gaps."""

    def __init__(self) -> None:
        self.key: str | None = None
        self.item = ""
        self._received_ms = 0.0
        self._pos_ms = 0.0  # playback position at `_anchor`
        self._anchor = 0.0  # wall time the position was last set
        self._open: float | None = None  # start of the interval playing now
        self._paused = False
        self.stopped: set[str] = set()
        self.done: list[Interval] = []

    def _end(self) -> float:
        """When what is buffered would finish playing if nothing stops it."""
        return self._anchor + (self._received_ms - self._pos_ms) / 1000.0

    def position_ms(self, t: float) -> float:
        if self._open is None:
            return self._pos_ms
        return min(self._received_ms, self._pos_ms + (t - self._anchor) * 1000.0)

    def _close(self, t: float) -> None:
        if self._open is not None and self.key is not None:
            end = min(t, self._end())
            self._pos_ms = self.position_ms(t)
            self.done.append(Interval(self._open, end, self.key))
            self._open = None
        self._anchor = t

    def on_audio(self, key: str, item: str, ms: float, t: float) -> None:
        if key in self.stopped:
            return  # a client never plays what it already flushed
        if key != self.key:
            self._close(t)  # a new response replaces the old one
            self.key, self.item = key, item
            self._received_ms = self._pos_ms = 0.0
            self._paused = False
        if not self._paused:
            if self._open is not None and t > self._end():  # underrun: silence, then resume
                self._close(self._end())
            if self._open is None:
                self._pos_ms, self._anchor, self._open = self.position_ms(t), t, t
        self._received_ms += ms

    def playing(self, t: float) -> bool:
        return self._open is not None and t < self._end()

    def busy(self, t: float) -> bool:
        """Playing, or paused with audio still to play (the user waits for it)."""
        return self.playing(t) or (self._paused and self._pos_ms < self._received_ms)

    def pause(self, t: float) -> float | None:
        """Stop playing now; returns the position (ms) if something was playing."""
        if not self.playing(t):
            return None
        self._close(t)
        self._paused = True
        return self._pos_ms

    def resume(self, key: str, t: float) -> None:
        if self._paused and key == self.key and key not in self.stopped:
            self._paused = False
            self._anchor = t
            if self._pos_ms < self._received_ms:
                self._open = t

    def stop(self, key: str, t: float) -> None:
        self.stopped.add(key)
        if key == self.key:
            self._close(t)
            self._paused = False
            self._received_ms = self._pos_ms

    def intervals(self, now: float) -> list[Interval]:
        current = []
        if self._open is not None and self.key is not None:
            current = [Interval(self._open, min(now, self._end()), self.key)]
        return merged(self.done + current)


class PacedPlayer:
    """Paced audio: loud frames as they arrive are what the user hears."""

    def __init__(self) -> None:
        self._runs: list[Interval] = []
        self.last_loud: float | None = None

    def on_frame(self, loud: bool, t: float) -> None:
        if not loud:
            return
        if self._runs and t - self._runs[-1].end < MERGE_GAP_S:
            self._runs[-1] = Interval(self._runs[-1].start, t)
        else:
            self._runs.append(Interval(t - FRAME_S, t))
        self.last_loud = t

    def playing(self, t: float) -> bool:
        """Agent audio around `t` (a pause shorter than a clause gap still counts)."""
        return any(r.start <= t < r.end + MERGE_GAP_S for r in self._runs[-4:])

    def busy(self, t: float) -> bool:
        return self.playing(t)

    def intervals(self, now: float) -> list[Interval]:
        return list(self._runs)
