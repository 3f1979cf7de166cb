"""Frames, the bounded frame buffer, and the frame sources (file, aiortc track, still image)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from video_synth import cut, room

from cadence.errors import ConfigError, ImageError, InputError
from cadence.video.frames import FrameBuffer, VideoFrame, histogram_distance
from cadence.video.sources import file_frames, from_av_frame, track_frames, write_video


def test_a_frame_owns_read_only_pixels_and_hashes_its_content():
    px = room(0).copy()
    frame = VideoFrame(px, 900, Fraction(1, 90_000), "screen")
    px[:] = 0  # the caller reusing its buffer changes nothing
    assert frame.pixels.max() > 0 and not frame.pixels.flags.writeable
    assert frame.time_s == pytest.approx(0.01)
    assert frame.digest == VideoFrame(room(0), 0).digest != VideoFrame(room(1), 0).digest
    assert frame.thumbnail.shape == (32, 32) and 0 <= frame.thumbnail.min() <= 1


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.float32),
                                 np.zeros((0, 4, 3), np.uint8)])
def test_malformed_pixels_are_refused(bad):
    with pytest.raises(ImageError):
        VideoFrame(bad, 0)


def test_buffer_ingests_at_most_its_rate_and_drops_the_oldest():
    buf = FrameBuffer(max_frames=5, ingest_fps=2.0)
    kept = [buf.push(VideoFrame.at(room(0), i / 10)) for i in range(40)]  # 4 s at 10 fps
    assert sum(kept) == 8 and buf.skipped == 32  # one frame per 0.5 s
    assert len(buf) == 5 and buf.dropped == 3
    assert [round(f.time_s, 1) for f in buf.frames()] == [1.5, 2.0, 2.5, 3.0, 3.5]
    assert buf.latest() is buf.frames()[-1]


def test_buffer_bounds_bytes_too():
    one = VideoFrame.at(room(0), 0).nbytes
    buf = FrameBuffer(max_frames=100, max_bytes=3 * one, ingest_fps=100)
    for i in range(10):
        buf.push(VideoFrame.at(room(0), i))
    assert len(buf) == 3 and buf.nbytes == 3 * one and buf.dropped == 7
    with pytest.raises(ConfigError):
        FrameBuffer(max_frames=0)


def test_video_file_round_trip_through_pyav(tmp_path: Path):
    path = tmp_path / "cut.mp4"
    frames = cut(seconds=2.0, fps=10.0, at_s=1.0)
    write_video(path, [np.asarray(f.pixels) for f in frames], fps=10)
    decoded = list(file_frames(path))
    assert len(decoded) == 20
    assert decoded[5].time_s == pytest.approx(0.5, abs=0.01)
    assert decoded[0].source == "file"
    assert histogram_distance(decoded[0], decoded[-1]) > 0.5  # the cut survived encoding
    sampled = list(file_frames(path, fps=2.0))
    assert [round(f.time_s, 1) for f in sampled] == [0.0, 0.5, 1.0, 1.5]


def test_bad_video_files_are_refused(tmp_path: Path):
    with pytest.raises(InputError, match="no such"):
        list(file_frames(tmp_path / "missing.mp4"))
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video" * 100)
    with pytest.raises(InputError):
        list(file_frames(junk))


class _FakeTrack:
    """Stands in for an aiortc video track: av.VideoFrames with pts/time_base, then the end."""

    def __init__(self, n: int) -> None:
        self.sent = 0
        self.n = n

    async def recv(self) -> av.VideoFrame:
        from aiortc.mediastreams import MediaStreamError

        if self.sent == self.n:
            raise MediaStreamError
        frame = av.VideoFrame.from_ndarray(room(self.sent % 2), format="rgb24")
        frame = frame.reformat(format="yuv420p")  # what aiortc's decoder hands out
        frame.pts = self.sent * 3000
        frame.time_base = Fraction(1, 90_000)
        self.sent += 1
        return frame


async def test_track_frames_keep_the_rtp_clock():
    frames = [f async for f in track_frames(_FakeTrack(3), source="camera")]
    assert [round(f.time_s, 4) for f in frames] == [0.0, 0.0333, 0.0667]
    assert frames[1].pixels.shape == (120, 160, 3)
    assert histogram_distance(frames[0], frames[1]) > 0.5


def test_av_frames_without_a_clock_get_one():
    frame = av.VideoFrame.from_ndarray(room(0), format="rgb24")
    vf = from_av_frame(frame)
    assert vf.time_base == Fraction(1, 90_000) and vf.pts > 0
