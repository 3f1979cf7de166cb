"""Vision-stage latency: frame to first token, for each vision backend that runs here.

`vision_latency()` returns one record per backend and frame count; `cadence bench` prints it.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cadence.llm.base import ChatMessage, GenerationOptions, LLMBackend
from cadence.video.context import VisionContext
from cadence.video.frames import VideoFrame
from cadence.video.samplers import FixedRate
from cadence.video.scene import SceneReader

QUESTION = "What does the sign say?"


def sign_frame(text: str = "OPEN 24 HOURS", *, time_s: float = 0.0,
               size: tuple[int, int] = (640, 480), seed: int = 0) -> VideoFrame:
    """A camera-like frame of a sign (light noise, so each seed is a new frame for caches)."""
    img = Image.new("RGB", size, (34, 92, 160))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=max(16, size[1] // 10))
    draw.rectangle((size[0] // 12, size[1] // 3, size[0] * 11 // 12, size[1] * 2 // 3),
                   fill=(245, 245, 240))
    draw.text((size[0] // 8, size[1] * 5 // 12), text, fill=(180, 20, 20), font=font)
    noise = np.random.default_rng(seed).integers(0, 6, (size[1], size[0], 3), dtype=np.uint8)
    return VideoFrame.at(np.asarray(img, dtype=np.uint8) + noise, time_s)


def _frames(n: int, seed: int) -> list[VideoFrame]:
    return [sign_frame(time_s=i * 0.5, seed=seed * 100 + i) for i in range(n)]


async def _first_token(llm: LLMBackend, messages: list[ChatMessage]) -> float:
    start = time.perf_counter()
    stream = llm.stream(messages, GenerationOptions(max_tokens=4, temperature=0.0))
    try:
        async for delta in stream:
            if delta:  # not a heartbeat: the first text
                break
    finally:
        await stream.aclose()
    return (time.perf_counter() - start) * 1000


async def _measure(ctx: VisionContext, llm: LLMBackend | None, n: int, runs: int, seed: int,
                   ) -> dict[str, Any]:
    vision, first, cached = [], [], []
    for run in range(runs + 1):  # run 0 warms (lazy init, caches of the runtime)
        frames = _frames(n, seed + run)
        start = time.perf_counter()
        turn = await ctx.for_turn(QUESTION, frames)
        prepared = (time.perf_counter() - start) * 1000
        start = time.perf_counter()
        await ctx.for_turn(QUESTION, frames)  # same frames again: served from the caches
        again = (time.perf_counter() - start) * 1000
        ttft = None
        if llm is not None:
            msgs = turn.apply([ChatMessage("system", "Answer briefly."),
                               ChatMessage("user", QUESTION)])
            ttft = await _first_token(llm, msgs)
        if run:
            vision.append(prepared)
            cached.append(again)
            if ttft is not None:
                first.append(prepared + ttft)
    record: dict[str, Any] = {
        "frames": n, "vision_ms": round(statistics.median(vision), 1),
        "vision_cached_ms": round(statistics.median(cached), 1),
        "frame_to_first_token_ms": round(statistics.median(first), 1) if first else None,
        "tokens_per_turn": turn.metrics.image_tokens or turn.metrics.text_tokens,
    }
    return record


def vision_latency(
    *, families: Sequence[str] = ("idefics3", "qwen2_vl", "llava_onevision", "mllama"),
    frame_counts: Sequence[int] = (1, 4), runs: int = 3, text_llm: LLMBackend | None = None,
    device: str = "cpu", real_size: bool = False, ocr_threads: int = 1,
) -> list[dict[str, Any]]:
    """Frame-to-first-token per backend (median of `runs`, after one warm-up run).

    The scene reader's figure is OCR + prompt fusion, plus `text_llm`'s first token when one
    is given (the embedded LLM). Transformers models are built here with random weights
    (`real_size` for real layer shapes, on `device`); a family that fails is reported, not
    fatal.
    """
    return asyncio.run(_vision_latency(families, frame_counts, runs, text_llm, device,
                                       real_size, ocr_threads))


async def _vision_latency(families: Sequence[str], frame_counts: Sequence[int], runs: int,
                          text_llm: LLMBackend | None, device: str, real_size: bool,
                          ocr_threads: int) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    sampler = FixedRate(fps=2.0, window_s=30.0)
    reader = SceneReader(threads=ocr_threads)
    start = time.perf_counter()
    reader.warm()
    load_ms = round((time.perf_counter() - start) * 1000, 1)
    for n in frame_counts:
        ctx = VisionContext("scene", sampler=sampler, reader=reader)
        record = await _measure(ctx, text_llm, n, runs, seed=1)
        records.append({"backend": "scene_reader", "load_ms": load_ms, **record})
    if not families:
        return records
    try:
        from cadence.llm.transformers_backend import TransformersVLM
        from cadence.llm.vlm_tiny import build_tiny_vlm
    except ImportError as exc:  # the gpu extra is not installed
        records.append({"backend": "transformers", "error": str(exc)})
        return records
    for family in families:
        with tempfile.TemporaryDirectory(prefix=f"cadence-{family}-") as tmp:
            try:
                start = time.perf_counter()
                build_tiny_vlm(family, tmp, real_size=real_size)
                vlm = TransformersVLM.load(tmp, device=device)
                load_ms = round((time.perf_counter() - start) * 1000, 1)
                for n in frame_counts:
                    ctx = VisionContext("images", sampler=sampler, cost=vlm.cost,
                                        context_window=vlm.context_window,
                                        count_tokens=vlm.count_tokens)
                    record = await _measure(ctx, vlm, n, runs, seed=2)
                    records.append({"backend": f"transformers:{family}", "device": device,
                                    "real_size": real_size, "load_ms": load_ms, **record})
            except Exception as exc:  # one family's failure must not hide the others' figures
                records.append({"backend": f"transformers:{family}", "error": repr(exc)})
    return records


def format_records(records: Sequence[dict[str, Any]]) -> str:
    """A plain table for the terminal."""
    lines = [f"{'backend':<34}{'frames':>7}{'vision ms':>11}{'cached ms':>11}{'to 1st tok':>12}"
             f"{'tokens':>8}"]
    for r in records:
        if "error" in r:
            lines.append(f"{r['backend']:<34} error: {r['error']}")
            continue
        first = r["frame_to_first_token_ms"]
        lines.append(f"{r['backend']:<34}{r['frames']:>7}{r['vision_ms']:>11}"
                     f"{r['vision_cached_ms']:>11}{first if first is not None else '-':>12}"
                     f"{r['tokens_per_turn']:>8}")
    return "\n".join(lines)
