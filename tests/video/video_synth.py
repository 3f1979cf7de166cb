"""Generated test video: static scenes, a cut, motion, a scroll, signs with text."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cadence.video.frames import VideoFrame

W, H = 160, 120


def _noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.integers(-2, 3, shape)


def room(palette: int = 0) -> np.ndarray:
    """A simple scene: wall, floor, a window and a table, in one of two palettes."""
    colours = [((70, 110, 170), (120, 80, 50), (220, 220, 230), (40, 40, 40)),
               ((200, 140, 40), (40, 130, 60), (250, 240, 200), (150, 30, 30))][palette]
    img = Image.new("RGB", (W, H), colours[0])
    d = ImageDraw.Draw(img)
    d.rectangle((0, 80, W, H), fill=colours[1])
    d.rectangle((20, 15, 70, 55), fill=colours[2])
    d.rectangle((90, 60, 150, 85), fill=colours[3])
    return np.asarray(img, dtype=np.uint8)


def _frames(images: list[np.ndarray], fps: float, seed: int = 0) -> list[VideoFrame]:
    rng = np.random.default_rng(seed)
    out = []
    for i, img in enumerate(images):
        noisy = np.clip(img.astype(np.int16) + _noise(rng, img.shape), 0, 255).astype(np.uint8)
        out.append(VideoFrame.at(noisy, i / fps))
    return out


def static(seconds: float = 6.0, fps: float = 10.0) -> list[VideoFrame]:
    return _frames([room(0)] * int(seconds * fps), fps)


def cut(seconds: float = 6.0, fps: float = 10.0, at_s: float = 3.0) -> list[VideoFrame]:
    n, k = int(seconds * fps), int(at_s * fps)
    return _frames([room(0)] * k + [room(1)] * (n - k), fps)


def motion(seconds: float = 6.0, fps: float = 10.0) -> list[VideoFrame]:
    """A ball crossing the room (and back)."""
    images = []
    n = int(seconds * fps)
    for i in range(n):
        img = Image.fromarray(room(0))
        x = int(10 + (W - 40) * abs(((i / n) * 2) % 2 - 1))
        ImageDraw.Draw(img).ellipse((x, 40, x + 28, 68), fill=(230, 30, 30))
        images.append(np.asarray(img, dtype=np.uint8))
    return _frames(images, fps)


def scroll(seconds: float = 6.0, fps: float = 10.0, px_per_frame: int = 3) -> list[VideoFrame]:
    """A page of text lines scrolling up, like a document on a shared screen."""
    page = Image.new("RGB", (W, H * 4), (250, 250, 250))
    d = ImageDraw.Draw(page)
    for row in range(0, H * 4, 12):
        d.text((6, row), f"line {row // 12:03d} lorem ipsum dolor", fill=(20, 20, 20))
    arr = np.asarray(page, dtype=np.uint8)
    n = int(seconds * fps)
    return _frames([arr[i * px_per_frame: i * px_per_frame + H] for i in range(n)], fps)


def sign(text: str, size: tuple[int, int] = (640, 480), font_px: int = 44,
         lines: int = 1) -> np.ndarray:
    """A sign with large text (Pillow's default font, scaled up), on a blue wall."""
    img = Image.new("RGB", size, (34, 92, 160))
    d = ImageDraw.Draw(img)
    d.rectangle((20, size[1] // 4, size[0] - 20, size[1] * 3 // 4), fill=(245, 245, 240))
    font = ImageFont.load_default(size=font_px)
    words = text.split()
    per = max(1, -(-len(words) // lines))
    for i in range(lines):
        chunk = " ".join(words[i * per:(i + 1) * per])
        d.text((40, size[1] // 4 + 20 + i * int(font_px * 1.3)), chunk, fill=(170, 20, 20),
               font=font)
    return np.asarray(img, dtype=np.uint8)
