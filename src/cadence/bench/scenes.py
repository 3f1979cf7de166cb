"""Synthesized camera frames for tests and benchmarks: a sign with words on it.

Drawn with Pillow's default font scaled up, so no font files are needed anywhere.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cadence.video.frames import VideoFrame


def sign_pixels(
    text: str, size: tuple[int, int] = (640, 480), font_px: int = 40, lines: int = 1
) -> np.ndarray:
    """RGB uint8 pixels of a light sign with red lettering on a blue wall."""
    img = Image.new("RGB", size, (34, 92, 160))
    draw = ImageDraw.Draw(img)
    draw.rectangle((20, size[1] // 4, size[0] - 20, size[1] * 3 // 4), fill=(245, 245, 240))
    font = ImageFont.load_default(size=font_px)
    words = text.split()
    per = max(1, -(-len(words) // lines))
    for i in range(lines):
        chunk = " ".join(words[i * per : (i + 1) * per])
        y = size[1] // 4 + 20 + i * int(font_px * 1.3)
        draw.text((40, y), chunk, fill=(170, 20, 20), font=font)
    return np.asarray(img, dtype=np.uint8)


def sign_frames(text: str, seconds: float = 2.0, fps: float = 4.0, **kw: int) -> list[VideoFrame]:
    """A still camera looking at a sign: the same picture, `fps` times a second."""
    pixels = sign_pixels(text, **kw)  # type: ignore[arg-type]
    return [VideoFrame.at(pixels, i / fps) for i in range(int(seconds * fps))]
