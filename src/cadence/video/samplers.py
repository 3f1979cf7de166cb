"""Frame samplers: which of the buffered frames a turn shows the model.

Each sampler is pure (frames in, frames out, oldest first) and never returns more than
`max_frames`, which the caller derives from the turn's visual token budget.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cadence.errors import ConfigError
from cadence.video.frames import VideoFrame, histogram_distance, perceptual_distance


class Sampler(Protocol):
    @property
    def name(self) -> str: ...

    def select(
        self, frames: Sequence[VideoFrame], question_time_s: float | None, max_frames: int
    ) -> list[VideoFrame]:
        """Frames to show for a question asked at `question_time_s` (None: the latest frame)."""
        ...


def _upto(frames: Sequence[VideoFrame], t: float | None) -> list[VideoFrame]:
    """Frames at or before t (the future is not what the user asked about)."""
    if t is None:
        return list(frames)
    kept = [f for f in frames if f.time_s <= t + 1e-6]
    return kept or list(frames[:1])


def _cap(chosen: list[VideoFrame], max_frames: int) -> list[VideoFrame]:
    """Keep the newest `max_frames` (the freshest frame matters most for a live question)."""
    if max_frames <= 0:
        return []
    return chosen[-max_frames:]


@dataclass(frozen=True)
class OnQuestion:
    """The freshest frame at the end of the user's speech: one keyframe per question."""

    name: str = "on_question"

    def select(self, frames: Sequence[VideoFrame], question_time_s: float | None,
               max_frames: int) -> list[VideoFrame]:
        past = _upto(frames, question_time_s)
        return _cap(past[-1:], max_frames)


@dataclass(frozen=True)
class FixedRate:
    """`fps` frames per second over the last `window_s` seconds before the question."""

    fps: float = 1.0
    window_s: float = 4.0
    name: str = "fixed_rate"

    def select(self, frames: Sequence[VideoFrame], question_time_s: float | None,
               max_frames: int) -> list[VideoFrame]:
        past = _upto(frames, question_time_s)
        if not past:
            return []
        end = past[-1].time_s if question_time_s is None else question_time_s
        chosen: list[VideoFrame] = []
        step = 1.0 / self.fps
        target = end
        # Walk back from the question on a grid; take the latest frame at or before each point.
        while target >= end - self.window_s - 1e-9 and len(chosen) < max(1, max_frames):
            candidates = [f for f in past if f.time_s <= target + 1e-6]
            if not candidates:
                break
            pick = candidates[-1]
            if not chosen or pick is not chosen[-1]:
                chosen.append(pick)
            target -= step
        return _cap(sorted(chosen, key=lambda f: f.time_s), max_frames)


@dataclass(frozen=True)
class SceneChange:
    """A frame whenever the picture changed past `threshold` since the last kept frame.

    `metric="histogram"` reacts to cuts (colour content changes), `"perceptual"` also to
    motion and scrolling (luma thumbnails differ). The newest frame is always included.
    """

    threshold: float = 0.25
    metric: str = "histogram"
    window_s: float = 10.0
    name: str = "scene_change"

    def __post_init__(self) -> None:
        if self.metric not in ("histogram", "perceptual"):
            raise ConfigError(f"scene_change metric must be histogram or perceptual, "
                              f"not {self.metric!r}")

    def select(self, frames: Sequence[VideoFrame], question_time_s: float | None,
               max_frames: int) -> list[VideoFrame]:
        past = _upto(frames, question_time_s)
        if not past:
            return []
        start = past[-1].time_s - self.window_s
        past = [f for f in past if f.time_s >= start - 1e-6]
        distance = histogram_distance if self.metric == "histogram" else perceptual_distance
        chosen = [past[0]]
        for frame in past[1:]:
            if distance(chosen[-1], frame) > self.threshold:
                chosen.append(frame)
        # The newest frame shows the current state, unless it equals the last kept scene.
        if past[-1] is not chosen[-1] and distance(chosen[-1], past[-1]) > self.threshold / 4:
            chosen.append(past[-1])
        return _cap(chosen, max_frames)


@dataclass(frozen=True)
class Adaptive:
    """More frames under motion, fewer when static: a frame each time accumulated motion
    passes `motion_step`, at least one per 1/`min_fps` s, at most `max_fps`; the newest
    frame always. The cap (`max_frames`, from the token budget) keeps the newest."""

    min_fps: float = 0.25
    max_fps: float = 4.0
    motion_step: float = 0.04
    window_s: float = 6.0
    name: str = "adaptive"

    def select(self, frames: Sequence[VideoFrame], question_time_s: float | None,
               max_frames: int) -> list[VideoFrame]:
        past = _upto(frames, question_time_s)
        if not past:
            return []
        start = past[-1].time_s - self.window_s
        past = [f for f in past if f.time_s >= start - 1e-6]
        chosen = [past[-1]]
        motion = 0.0
        # Walk back from the newest frame, so under a tight cap the newest motion wins.
        for newer, frame in zip(reversed(past), list(reversed(past))[1:], strict=False):
            motion += perceptual_distance(newer, frame)
            gap = chosen[-1].time_s - frame.time_s
            if gap < 1.0 / self.max_fps - 1e-6:
                continue
            if motion >= self.motion_step or gap >= 1.0 / self.min_fps - 1e-6:
                chosen.append(frame)
                motion = 0.0
        return _cap(sorted(chosen, key=lambda f: f.time_s), max_frames)


@dataclass(frozen=True)
class Timestamps:
    """Frames nearest to explicit moments: `offsets_s` seconds before the question."""

    offsets_s: tuple[float, ...] = (0.0,)
    name: str = "timestamps"

    def select(self, frames: Sequence[VideoFrame], question_time_s: float | None,
               max_frames: int) -> list[VideoFrame]:
        past = _upto(frames, question_time_s)
        if not past:
            return []
        end = past[-1].time_s if question_time_s is None else question_time_s
        chosen: list[VideoFrame] = []
        for offset in self.offsets_s:
            pick = min(past, key=lambda f: abs(f.time_s - (end - offset)))
            if all(pick is not c for c in chosen):
                chosen.append(pick)
        return _cap(sorted(chosen, key=lambda f: f.time_s), max_frames)


_NUMBERS = {"one": 1, "a": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
            "seven": 7, "eight": 8, "nine": 9, "ten": 10, "a couple of": 2, "a few": 3}
_AGO = re.compile(
    r"\b(\d+(?:\.\d+)?|one|two|three|four|five|six|seven|eight|nine|ten|a couple of|a few|a)\s+"
    r"(seconds?|secs?|s|minutes?|mins?)\s+ago\b", re.IGNORECASE,
)
_MOMENT = re.compile(r"\b(a moment|just now|a second) ago\b|\bjust now\b", re.IGNORECASE)


def time_references(question: str) -> tuple[float, ...]:
    """Offsets in seconds named in a question ("two seconds ago" → (2.0,)); () when none."""
    offsets: list[float] = []
    for amount, unit in _AGO.findall(question):
        value = _NUMBERS.get(amount.lower())
        number = float(amount) if value is None else float(value)
        offsets.append(number * (60.0 if unit.lower().startswith("m") else 1.0))
    if not offsets and _MOMENT.search(question):
        offsets.append(1.0)
    return tuple(offsets)


_SAMPLERS: dict[str, type] = {
    "on_question": OnQuestion, "fixed_rate": FixedRate, "scene_change": SceneChange,
    "adaptive": Adaptive, "timestamps": Timestamps,
}


def make_sampler(config: Mapping[str, Any] | str | None = None) -> Sampler:
    """A sampler from a profile's `[sampler]` table: `name` plus that sampler's parameters."""
    if config is None:
        return OnQuestion()
    table: dict[str, Any] = {"name": config} if isinstance(config, str) else dict(config)
    name = str(table.pop("name", "on_question"))
    cls = _SAMPLERS.get(name)
    if cls is None:
        raise ConfigError(f"unknown sampler {name!r}; known: {', '.join(sorted(_SAMPLERS))}")
    if "offsets_s" in table:
        table["offsets_s"] = tuple(float(x) for x in table["offsets_s"])
    try:
        sampler: Sampler = cls(**table)
    except TypeError as exc:
        raise ConfigError(f"bad parameters for sampler {name!r}: {exc}") from None
    return sampler
