"""Video frames and the bounded per-session frame buffer.

A `VideoFrame` carries RGB pixels with its own clock (pts × time_base, like aiortc's frames);
`FrameBuffer` keeps the recent past with a stated policy: ingest at most `ingest_fps`, and
when full (frames or bytes) drop the oldest.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cached_property

import numpy as np

from cadence.errors import ConfigError, ImageError

THUMB_SIDE = 32  # the thumbnail used for motion / scene-change measures
CHANGED_LUMA = 0.03  # a thumbnail cell "changed" past this (≈8 grey levels; noise stays under)


@dataclass(frozen=True, eq=False)
class VideoFrame:
    """One frame: H×W×3 RGB uint8 pixels (read-only), a timestamp and where it came from."""

    pixels: np.ndarray
    pts: int
    time_base: Fraction = Fraction(1, 1000)
    source: str = "camera"  # camera | screen | file | image (free text, shown in prompts)

    def __post_init__(self) -> None:
        px = self.pixels
        if px.dtype != np.uint8 or px.ndim != 3 or px.shape[2] != 3:
            raise ImageError(
                f"a frame must be H×W×3 uint8 RGB, got {px.dtype} with shape {px.shape}"
            )
        if px.shape[0] < 1 or px.shape[1] < 1:
            raise ImageError(f"a frame has no pixels (shape {px.shape})")
        if px.flags.writeable:
            px = px.copy()  # own the data: a caller reusing its buffer cannot change us
            px.flags.writeable = False
            object.__setattr__(self, "pixels", px)

    @classmethod
    def at(cls, pixels: np.ndarray, time_s: float, source: str = "camera") -> VideoFrame:
        """A frame stamped in milliseconds (tests and still images)."""
        return cls(pixels, round(time_s * 1000), Fraction(1, 1000), source)

    @property
    def time_s(self) -> float:
        return float(self.pts * self.time_base)

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.pixels.nbytes)

    @cached_property
    def digest(self) -> str:
        """Content hash (pixels + shape): the key of every per-frame cache."""
        h = hashlib.blake2b(digest_size=12)
        h.update(np.asarray(self.pixels.shape, dtype=np.int64).tobytes())
        h.update(self.pixels.tobytes())
        return h.hexdigest()

    @cached_property
    def thumbnail(self) -> np.ndarray:
        """32×32 luma in [0, 1], by block averaging: cheap and stable under noise."""
        luma = self.pixels.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        h, w = luma.shape
        ys = np.linspace(0, h, THUMB_SIDE + 1).astype(int)
        xs = np.linspace(0, w, THUMB_SIDE + 1).astype(int)
        if h >= THUMB_SIDE and w >= THUMB_SIDE:
            sums = np.add.reduceat(np.add.reduceat(luma, ys[:-1], axis=0), xs[:-1], axis=1)
            counts = np.outer(np.diff(ys), np.diff(xs))
            thumb = sums / counts
        else:  # tiny frames: nearest sampling
            thumb = luma[np.minimum(ys[:-1], h - 1)][:, np.minimum(xs[:-1], w - 1)]
        return (thumb / 255.0).astype(np.float32)

    @cached_property
    def histogram(self) -> np.ndarray:
        """Normalised 3×16-bin colour histogram (on a subsample: enough for cut detection)."""
        step = max(1, int(np.sqrt(self.pixels.shape[0] * self.pixels.shape[1] / 40_000)))
        sub = self.pixels[::step, ::step].reshape(-1, 3)
        hist = np.concatenate([np.bincount(sub[:, c] >> 4, minlength=16) for c in range(3)])
        return (hist / max(1, sub.shape[0])).astype(np.float32)


def perceptual_distance(a: VideoFrame, b: VideoFrame) -> float:
    """Share of thumbnail cells whose luma changed by over 3%, 0 … 1: sees motion and scrolls.

    A share of changed area, not a mean difference: a small moving object is plain to see
    while camera noise (averaged away in each cell) stays at zero.
    """
    return float((np.abs(a.thumbnail - b.thumbnail) > CHANGED_LUMA).mean())


def histogram_distance(a: VideoFrame, b: VideoFrame) -> float:
    """Half the L1 distance of colour histograms per channel, 0 … 1: sees cuts, not motion."""
    return float(np.abs(a.histogram - b.histogram).sum() / 6.0)


@dataclass
class FrameBuffer:
    """The recent frames of one session, oldest first.

    Policy (bounded, stated): a frame arriving sooner than 1/`ingest_fps` after the last kept
    one is skipped (counted in `skipped`); when more than `max_frames` frames or `max_bytes`
    of pixels are held, the oldest are dropped (counted in `dropped`).
    """

    max_frames: int = 48
    max_bytes: int = 96 * 1024 * 1024
    ingest_fps: float = 4.0
    skipped: int = field(default=0, init=False)
    dropped: int = field(default=0, init=False)
    _frames: deque[VideoFrame] = field(default_factory=deque, init=False, repr=False)
    _bytes: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_frames < 1 or self.max_bytes < 1 or self.ingest_fps <= 0:
            raise ConfigError(
                "FrameBuffer needs max_frames >= 1, max_bytes >= 1 and ingest_fps > 0"
            )

    def push(self, frame: VideoFrame) -> bool:
        """Keep `frame` (True) or skip it under the ingest rate (False)."""
        if self._frames:
            last = self._frames[-1].time_s
            if 0 <= frame.time_s - last < 1.0 / self.ingest_fps:
                self.skipped += 1
                return False
        self._frames.append(frame)
        self._bytes += frame.nbytes
        while len(self._frames) > 1 and (
            len(self._frames) > self.max_frames or self._bytes > self.max_bytes
        ):
            old = self._frames.popleft()
            self._bytes -= old.nbytes
            self.dropped += 1
        return True

    def frames(self) -> list[VideoFrame]:
        """A snapshot, oldest first."""
        return list(self._frames)

    def latest(self) -> VideoFrame | None:
        return self._frames[-1] if self._frames else None

    def clear(self) -> None:
        self._frames.clear()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._frames)

    def __iter__(self) -> Iterator[VideoFrame]:
        return iter(list(self._frames))

    @property
    def nbytes(self) -> int:
        return self._bytes
