"""The CPU default for vision: a scene reader (RapidOCR text + cheap scene facts).

Its output is fused into the text LLM's prompt as delimited, untrusted data. Per-frame
results are cached by frame digest, so a static camera is read once across turns.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cadence.errors import ModelError, ModelNotInstalled
from cadence.video.frames import VideoFrame
from cadence.video.images import Resize, resize_pixels
from cadence.video.tokens import cap_size

OcrEngine = Callable[[np.ndarray], Any]  # BGR uint8 → RapidOCR's (result, timings)


@dataclass(frozen=True)
class TextLine:
    text: str
    confidence: float
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in frame pixels


@dataclass(frozen=True)
class SceneFacts:
    """What the scene reader found in one frame."""

    lines: tuple[TextLine, ...]
    colours: tuple[tuple[str, float], ...]  # (name, share of pixels), largest first
    brightness: float  # mean luma, 0 … 1
    ocr_ms: float
    resize: Resize | None  # the downscale before OCR, when there was one

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)


def _colour_names(pixels: np.ndarray, top: int = 3) -> tuple[tuple[str, float], ...]:
    """Dominant named colours from an HSV classification of a subsample."""
    step = max(1, int(np.sqrt(pixels.shape[0] * pixels.shape[1] / 20_000)))
    rgb = pixels[::step, ::step].reshape(-1, 3).astype(np.float32) / 255.0
    mx, mn = rgb.max(axis=1), rgb.min(axis=1)
    delta = mx - mn
    sat = np.where(mx > 0, delta / np.maximum(mx, 1e-6), 0.0)
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    safe = np.maximum(delta, 1e-6)
    hue = np.where(mx == r, ((g - b) / safe) % 6, np.where(mx == g, (b - r) / safe + 2,
                                                              (r - g) / safe + 4)) * 60.0
    names = np.full(rgb.shape[0], "gray", dtype=object)
    bounds = [(0, 15, "red"), (15, 40, "orange"), (40, 70, "yellow"), (70, 165, "green"),
              (165, 200, "cyan"), (200, 255, "blue"), (255, 290, "purple"), (290, 345, "pink"),
              (345, 361, "red")]
    for lo, hi, name in bounds:
        names[(hue >= lo) & (hue < hi)] = name
    names[((names == "orange") | (names == "red")) & (mx < 0.6) & (sat > 0.25)] = "brown"
    names[sat < 0.18] = "gray"
    names[(sat < 0.18) & (mx > 0.85)] = "white"
    names[mx < 0.18] = "black"
    labels, counts = np.unique(names.astype(str), return_counts=True)
    order = np.argsort(-counts)
    total = float(counts.sum())
    return tuple((str(labels[i]), round(float(counts[i]) / total, 2)) for i in order[:top]
                 if counts[i] / total >= 0.08)


def brightness_word(value: float) -> str:
    return ("dark" if value < 0.2 else "dim" if value < 0.4 else "well lit" if value < 0.75
            else "very bright")


class SceneReader:
    """RapidOCR + colours + brightness per frame, cached by frame digest (thread-safe).

    `threads` bounds ONNX Runtime's threads: on 2 cores, OCR beside ASR/LLM/TTS must not take
    every core. Frames larger than `max_side_px` are downscaled before OCR (recorded).
    """

    def __init__(
        self, *, threads: int = 1, min_confidence: float = 0.5, max_side_px: int = 960,
        cache_size: int = 256, engine: OcrEngine | None = None,
    ) -> None:
        self.min_confidence = min_confidence
        self.max_side_px = max_side_px
        self.cache_size = cache_size
        self.hits = 0
        self.misses = 0
        self._threads = threads
        self._engine = engine
        self._cache: OrderedDict[str, SceneFacts] = OrderedDict()
        self._lock = threading.Lock()
        self._ocr_lock = threading.Lock()

    def _ocr(self) -> OcrEngine:
        if self._engine is None:
            try:
                from rapidocr_onnxruntime import RapidOCR
            except ImportError:
                raise ModelNotInstalled(
                    "the scene reader needs rapidocr-onnxruntime (pip install "
                    "rapidocr-onnxruntime); it bundles its ONNX models"
                ) from None
            # limit_type "max": RapidOCR's default upscales the short side to 736 px, which
            # triples the cost of a 480p frame and reads no better at sign-sized text.
            # unclip_ratio 2.5 (default 1.6): a roomier crop around each line lets the
            # recognizer keep the spaces of all-caps signs ("OPEN 24 HOURS", not
            # "OPEN24HOURS"), measured on generated signs at 36-60 px.
            self._engine = RapidOCR(
                intra_op_num_threads=self._threads, inter_op_num_threads=1,
                det_limit_type="max", det_limit_side_len=self.max_side_px,
                det_unclip_ratio=2.5,
            )
        return self._engine

    def warm(self) -> None:
        """Load the OCR models and run them once (first call pays ~0.5 s otherwise)."""
        blank = np.full((64, 160, 3), 255, np.uint8)
        self._ocr()(blank)

    def read(self, frame: VideoFrame) -> SceneFacts:
        key = frame.digest
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                self.hits += 1
                return cached
            self.misses += 1
        facts = self._read(frame)
        with self._lock:
            self._cache[key] = facts
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return facts

    def _read(self, frame: VideoFrame) -> SceneFacts:
        pixels = frame.pixels
        size = cap_size(frame.width, frame.height, self.max_side_px)
        resize = None
        if size != (frame.width, frame.height):
            resize = Resize(frame.digest[:8], (frame.width, frame.height), size,
                            f"scene reader OCR cap {self.max_side_px}px")
            pixels = resize_pixels(pixels, size)
        scale = frame.width / size[0]
        start = time.perf_counter()
        try:
            with self._ocr_lock:  # one OCR at a time: bounded CPU, and RapidOCR keeps state
                result, _ = self._ocr()(np.ascontiguousarray(pixels[:, :, ::-1]))
        except ModelNotInstalled:
            raise
        except Exception as exc:  # onnxruntime/OpenCV raise many types; the turn goes on
            raise ModelError(f"the scene reader failed on a frame ({exc})") from exc
        ocr_ms = (time.perf_counter() - start) * 1000
        lines: list[TextLine] = []
        for box, text, score in result or []:
            if float(score) < self.min_confidence or not str(text).strip():
                continue
            xs = [p[0] * scale for p in box]
            ys = [p[1] * scale for p in box]
            lines.append(TextLine(str(text).strip(), round(float(score), 3),
                                  (int(min(xs)), int(min(ys)), int(max(xs)), int(max(ys)))))
        lines.sort(key=lambda t: (round(t.box[1] / max(8, (t.box[3] - t.box[1]) * 0.6)),
                                  t.box[0]))  # reading order: rows, then left to right
        luma = float(frame.thumbnail.mean())
        return SceneFacts(tuple(lines), _colour_names(frame.pixels), round(luma, 3), ocr_ms,
                          resize)

    def read_all(self, frames: Sequence[VideoFrame]) -> list[SceneFacts]:
        return [self.read(f) for f in frames]
