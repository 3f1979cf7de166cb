"""Where frames come from: an aiortc video track, a video file (PyAV), still images.

All of them yield `VideoFrame`s with a timestamp; decoding errors become `ImageError`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import av
import numpy as np

from cadence.errors import ImageError, InputError
from cadence.video.frames import VideoFrame
from cadence.video.images import (
    DEFAULT_MAX_IMAGE_BYTES,
    DEFAULT_MAX_IMAGE_PX,
    decode_image,
    parse_data_url,
)


class VideoTrack(Protocol):
    """What we need of an aiortc `MediaStreamTrack` of kind "video"."""

    async def recv(self) -> Any: ...


def from_av_frame(frame: Any, source: str = "camera") -> VideoFrame:
    """An `av.VideoFrame` (aiortc hands these out) → `VideoFrame`, keeping its clock."""
    try:
        rgb = frame.to_ndarray(format="rgb24")
    except (ValueError, av.FFmpegError) as exc:
        raise ImageError(f"cannot convert a {source} frame to RGB ({exc})") from None
    pts = frame.pts if frame.pts is not None else round(time.monotonic() * 90_000)
    time_base = Fraction(frame.time_base) if frame.time_base is not None else Fraction(1, 90_000)
    return VideoFrame(rgb, int(pts), time_base, source)


async def track_frames(track: VideoTrack, source: str = "camera") -> AsyncIterator[VideoFrame]:
    """Pull frames from an aiortc track until it ends (aiortc raises MediaStreamError).

    Pulling is the back-pressure: a slow consumer makes aiortc's decoder drop frames, and
    `FrameBuffer.push` then keeps at most its ingest rate.
    """
    from aiortc.mediastreams import MediaStreamError

    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        yield from_av_frame(frame, source)


def file_frames(
    path: str | Path, *, fps: float | None = None, max_frames: int = 10_000, source: str = "file"
) -> Iterator[VideoFrame]:
    """Decode a video file with PyAV; `fps` subsamples by timestamp (None keeps every frame)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such video file")
    try:
        container = av.open(str(p))
    except (av.FFmpegError, OSError) as exc:
        raise InputError(f"{p}: not a readable video ({exc})") from None
    with container:
        if not container.streams.video:
            raise InputError(f"{p}: the file has no video stream")
        stream = container.streams.video[0]
        next_t = 0.0
        count = 0
        try:
            for frame in container.decode(stream):
                vf = from_av_frame(frame, source)
                if fps is not None:
                    if vf.time_s + 1e-6 < next_t:
                        continue
                    next_t = vf.time_s + 1.0 / fps
                yield vf
                count += 1
                if count >= max_frames:
                    return
        except av.FFmpegError as exc:
            raise InputError(f"{p}: video data is corrupt ({exc})") from None


def image_frame(
    data: bytes, *, time_s: float = 0.0, source: str = "image",
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES, max_pixels: int = DEFAULT_MAX_IMAGE_PX,
) -> VideoFrame:
    """A still image (PNG/JPEG/…) → a validated frame; see `decode_image` for the checks."""
    pixels = decode_image(data, max_bytes=max_bytes, max_pixels=max_pixels)
    return VideoFrame.at(pixels, time_s, source)


def data_url_frame(url: str, *, time_s: float = 0.0, source: str = "image") -> VideoFrame:
    """A Realtime `input_image` (`image_url` data URL) → a validated frame."""
    _, data = parse_data_url(url)
    return image_frame(data, time_s=time_s, source=source)


def write_video(path: str | Path, frames: list[np.ndarray], fps: int = 10) -> None:
    """Write RGB frames as an H.264/MPEG-4 file (tests and demos draw their video with it)."""
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        stream: Any = container.add_stream(codec, rate=fps)
        stream.width, stream.height = width - width % 2, height - height % 2
        stream.pix_fmt = "yuv420p"
        for px in frames:
            crop = np.ascontiguousarray(np.asarray(px)[: stream.height, : stream.width])
            frame = av.VideoFrame.from_ndarray(crop, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
