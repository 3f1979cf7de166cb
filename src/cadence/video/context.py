"""One turn's vision: route, sample, budget, then scene text or images for the model.

`VisionContext.for_turn(question, frames)` returns a `VisionTurn`: what to add to the LLM's
messages (`apply`) and the metrics of every decision taken on the way.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from itertools import pairwise
from typing import Any, Literal

from cadence.errors import CadenceError, ConfigError
from cadence.llm.base import ChatMessage, ImagePart
from cadence.llm.vision import (
    IMAGE_RULE,
    UNTRUSTED_CLOSE,
    UNTRUSTED_OPEN,
    UNTRUSTED_RULE,
    untrusted_block,
    with_system_rule,
)
from cadence.video.budget import VisualBudget, plan_frames
from cadence.video.frames import VideoFrame, histogram_distance, perceptual_distance
from cadence.video.images import Resize, encode_png, resize_pixels
from cadence.video.routing import route_turn
from cadence.video.samplers import Sampler, Timestamps, make_sampler
from cadence.video.scene import SceneFacts, SceneReader, brightness_word
from cadence.video.tokens import CostModel, cost_model

Mode = Literal["scene", "images"]
NO_FRAME_NOTE = "[No camera or screen frame is available, so you cannot see anything now.]"


@dataclass
class VisionMetrics:
    """Everything a turn decided about vision; `as_dict()` goes into the turn's trace."""

    visual: bool = False
    route: str = "text only"
    mode: str = "scene"
    sampler: str = ""
    frames_buffered: int = 0
    frames_sampled: int = 0
    frames_sent: int = 0
    dropped_oldest: int = 0
    resolution_steps: int = 0
    max_side_px: int = 0
    image_tokens: int = 0
    text_tokens: int = 0
    available_tokens: int = 0
    ocr_ms: float = 0.0
    cache_hits: int = 0
    prepare_ms: float = 0.0
    resizes: list[str] = field(default_factory=list)
    decisions: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class VisionTurn:
    """What vision adds to one turn: a system rule, text before the question, images."""

    visual: bool
    system_rule: str = ""
    user_prefix: str = ""
    images: tuple[ImagePart, ...] = ()
    metrics: VisionMetrics = field(default_factory=VisionMetrics)

    def apply(self, messages: Sequence[ChatMessage]) -> list[ChatMessage]:
        """The messages with the rule added to the system message and the prefix and images
        attached to the last user message (the question)."""
        out = with_system_rule(messages, self.system_rule)
        if not self.visual or not (self.user_prefix or self.images):
            return out
        for i in range(len(out) - 1, -1, -1):
            if out[i].role == "user":
                msg = out[i]
                content = msg.content
                if self.user_prefix:
                    content = f"{self.user_prefix}\n\n{msg.content}"
                out[i] = replace(msg, content=content, images=(*msg.images, *self.images))
                return out
        raise ConfigError("VisionTurn.apply needs a user message to attach vision to")


def _ago(frame: VideoFrame, now: float) -> str:
    return f"{max(0.0, now - frame.time_s):.1f} seconds ago"


def _looks(fact: SceneFacts) -> str:
    names = [name for name, _ in fact.colours]
    if not names:
        return brightness_word(fact.brightness)
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    mostly = "mostly " if fact.colours[0][1] >= 0.4 else ""
    return f"{brightness_word(fact.brightness)}, {mostly}{listed}"


def scene_text(frames: Sequence[VideoFrame], facts: Sequence[SceneFacts], now: float) -> str:
    """The scene reader's findings as plain sentences, image text only inside delimiters.

    The layout was chosen by trying variants on SmolLM2-135M: one short line per frame,
    "The camera shows text: <block> (looks)", made it quote signs and ignore their requests.
    """
    parts: list[str] = []
    previous = ""
    last = len(frames) - 1
    for i, (frame, fact) in enumerate(zip(frames, facts, strict=True)):
        if last == 0:
            subject = f"The {frame.source} shows"
        elif i == last:
            subject = f"The {frame.source} now shows"
        else:
            subject = f"The {frame.source} {_ago(frame, now)} showed"
        if fact.text and fact.text == previous:
            parts.append(f"{subject} the same text ({_looks(fact)}).")
        elif fact.text:
            parts.append(f"{subject} text: {untrusted_block(fact.text)} ({_looks(fact)})")
        else:
            parts.append(f"{subject} no readable text ({_looks(fact)}).")
        previous = fact.text
    if len(frames) > 1:
        motion = max(perceptual_distance(a, b) for a, b in pairwise(frames))
        cut = any(histogram_distance(a, b) > 0.4 for a, b in pairwise(frames))
        word = "the scene changed" if cut else (
            "a lot moved" if motion > 0.3 else "something moved" if motion > 0.01
            else "nothing moved")
        parts.append(f"Between these frames {word}.")
    return "\n".join(parts)


class VisionContext:
    """Per-session vision: a sampler, a budget, and either the scene reader or a VLM's cost.

    mode="scene": OCR + facts as untrusted text for a text LLM (the CPU default).
    mode="images": frames as images for a VLM (transformers or an OpenAI-compatible server),
    each costed by `cost` before the call.
    """

    def __init__(
        self, mode: Mode = "scene", *, sampler: Sampler | None = None,
        reader: SceneReader | None = None, cost: CostModel | None = None,
        budget: VisualBudget | None = None, context_window: int = 2048,
        count_tokens: Callable[[str], int] | None = None,
    ) -> None:
        if mode not in ("scene", "images"):
            raise ConfigError(f"vision mode must be scene or images, not {mode!r}")
        if mode == "images" and cost is None:
            raise ConfigError("vision mode 'images' needs the model's image cost model")
        self.mode: Mode = mode
        self.sampler = sampler or make_sampler(None)
        self.reader = reader if reader is not None or mode == "images" else SceneReader()
        self.cost = cost
        self.budget = budget or VisualBudget()
        self.context_window = context_window
        # Rough count (4 chars a token) when the LLM's tokenizer is not handed in.
        self.count_tokens = count_tokens or (lambda text: len(text) // 4 + 1)
        # Encoded frames by (digest, size): a frame re-sent on a later turn is not re-encoded.
        self._encoded: OrderedDict[tuple[str, tuple[int, int]], bytes] = OrderedDict()
        self.encoded_cache_size = 64

    def _encode(self, frame: VideoFrame, size: tuple[int, int]) -> tuple[bytes, bool]:
        key = (frame.digest, size)
        data = self._encoded.get(key)
        if data is not None:
            self._encoded.move_to_end(key)
            return data, True
        pixels = frame.pixels
        if size != (frame.width, frame.height):
            pixels = resize_pixels(pixels, size)
        data = encode_png(pixels)
        self._encoded[key] = data
        while len(self._encoded) > self.encoded_cache_size:
            self._encoded.popitem(last=False)
        return data, False

    @classmethod
    def from_config(
        cls, vlm: Mapping[str, Any], sampler: Mapping[str, Any] | None = None, *,
        context_window: int = 2048, count_tokens: Callable[[str], int] | None = None,
        cost: CostModel | None = None,
    ) -> VisionContext:
        """From a profile's `[vlm]` and `[sampler]` tables (see docs/video.md)."""
        table = dict(vlm)
        budget_keys = VisualBudget.__dataclass_fields__.keys()
        budget = VisualBudget(**{k: table[k] for k in budget_keys if k in table})
        backend = str(table.get("backend", "scene"))
        if backend == "scene":
            reader = SceneReader(threads=int(table.get("ocr_threads", 1)))
            return cls("scene", sampler=make_sampler(sampler), reader=reader, budget=budget,
                       context_window=context_window, count_tokens=count_tokens)
        if cost is None:
            params = dict(table.get("cost", {}))
            cost = cost_model(str(table.get("family", "fixed")), **params)
        return cls("images", sampler=make_sampler(sampler), cost=cost, budget=budget,
                   context_window=context_window, count_tokens=count_tokens)

    async def for_turn(
        self, question: str, frames: Sequence[VideoFrame], *, question_time_s: float | None = None,
        history_tokens: int = 0, images_attached: bool = False,
    ) -> VisionTurn:
        """Decide and prepare this turn's vision. Never raises for bad frames: errors are
        recorded in the metrics and the turn goes on with what worked."""
        start = time.perf_counter()
        metrics = VisionMetrics(mode=self.mode, frames_buffered=len(frames))
        route = route_turn(question, images_attached=images_attached)
        metrics.visual, metrics.route = route.visual, route.reason
        if not route.visual:
            return VisionTurn(False, metrics=metrics)
        sampler = Timestamps(route.time_offsets_s) if route.time_offsets_s else self.sampler
        metrics.sampler = sampler.name
        sampled = sampler.select(frames, question_time_s, self.budget.max_frames)
        metrics.frames_sampled = len(sampled)
        rule = UNTRUSTED_RULE if self.mode == "scene" else IMAGE_RULE
        if not sampled:
            metrics.decisions.append("no frame to show")
            return VisionTurn(True, rule, NO_FRAME_NOTE, metrics=metrics)
        now = question_time_s if question_time_s is not None else sampled[-1].time_s
        if self.mode == "scene":
            turn = await self._scene_turn(sampled, now, history_tokens, metrics)
        else:
            turn = await asyncio.to_thread(self._image_turn, sampled, now, history_tokens,
                                           metrics)
        metrics.prepare_ms = round((time.perf_counter() - start) * 1000, 1)
        return turn

    async def _scene_turn(self, frames: list[VideoFrame], now: float, history_tokens: int,
                          metrics: VisionMetrics) -> VisionTurn:
        assert self.reader is not None
        reader = self.reader
        facts: list[SceneFacts] = []
        kept: list[VideoFrame] = []
        for frame in frames:
            hits_before = reader.hits
            try:
                fact = await asyncio.to_thread(reader.read, frame)
            except CadenceError as exc:
                metrics.errors.append(exc.message)
                continue
            facts.append(fact)
            kept.append(frame)
            if reader.hits > hits_before:
                metrics.cache_hits += 1
            else:  # only OCR run for this turn counts as this turn's OCR time
                metrics.ocr_ms += fact.ocr_ms
            if fact.resize is not None:
                metrics.resizes.append(str(fact.resize))
        metrics.ocr_ms = round(metrics.ocr_ms, 1)
        if not kept:
            return VisionTurn(True, UNTRUSTED_RULE, NO_FRAME_NOTE, metrics=metrics)
        available = self.budget.available(self.context_window, history_tokens)
        metrics.available_tokens = available
        text = scene_text(kept, facts, now)
        # Over budget: drop the oldest frames' findings, then shorten the text that is left.
        while len(kept) > 1 and self.count_tokens(text) > available:
            kept, facts = kept[1:], facts[1:]
            metrics.dropped_oldest += 1
            text = scene_text(kept, facts, now)
        if metrics.dropped_oldest:
            metrics.decisions.append(f"dropped {metrics.dropped_oldest} oldest frame(s) to fit "
                                     f"{available} tokens")
        if self.count_tokens(text) > available:
            text = self._shorten(text, available)
            metrics.decisions.append(f"shortened the scene text to {len(text)} characters")
        metrics.frames_sent = len(kept)
        metrics.text_tokens = self.count_tokens(text)
        return VisionTurn(True, UNTRUSTED_RULE, text, metrics=metrics)

    def _shorten(self, text: str, available: int) -> str:
        """The longest prefix (delimiters closed) that fits `available` tokens; bisection,
        because token counts are not proportional to characters."""

        def cut(n: int) -> str:
            head = text[:n]
            if head.count(UNTRUSTED_OPEN) > head.count(UNTRUSTED_CLOSE):
                head += UNTRUSTED_CLOSE  # never leave image text undelimited
            return head + " [cut to fit]"

        lo, hi, best = 0, len(text), ""
        while lo <= hi:
            mid = (lo + hi) // 2
            if self.count_tokens(cut(mid)) <= available:
                best, lo = cut(mid), mid + 1
            else:
                hi = mid - 1
        return best

    def _image_turn(self, frames: list[VideoFrame], now: float, history_tokens: int,
                    metrics: VisionMetrics) -> VisionTurn:
        assert self.cost is not None
        plan = plan_frames(frames, self.cost, self.budget, context_window=self.context_window,
                           history_tokens=history_tokens)
        metrics.available_tokens = plan.available_tokens
        metrics.dropped_oldest = plan.dropped_oldest
        metrics.resolution_steps = plan.resolution_steps
        metrics.max_side_px = plan.max_side_px
        metrics.decisions.extend(plan.decisions)
        images: list[ImagePart] = []
        for frame, size, cost in zip(plan.frames, plan.sizes, plan.costs, strict=True):
            if size != (frame.width, frame.height):
                metrics.resizes.append(str(Resize(
                    frame.digest[:8], (frame.width, frame.height), size,
                    f"{self.cost.family} fit, cap {plan.max_side_px}px")))
            if cost.encoder_size != size:  # the processor's own resize, predicted, recorded
                metrics.resizes.append(str(Resize(
                    frame.digest[:8], size, cost.encoder_size,
                    f"{self.cost.family} processor (predicted), {cost.tiles} tile(s)")))
            data, hit = self._encode(frame, size)
            metrics.cache_hits += int(hit)
            images.append(ImagePart(data, "image/png", cost.tokens))
        metrics.frames_sent = len(images)
        metrics.image_tokens = plan.tokens
        if not images:
            note = "[The camera frames did not fit in the context, so you cannot see them now.]"
            return VisionTurn(True, IMAGE_RULE, note, metrics=metrics)
        when = ", ".join(_ago(f, now) for f in plan.frames)
        prefix = f"[{len(images)} frame(s) from the {plan.frames[-1].source}, oldest first: {when}]"
        metrics.text_tokens = self.count_tokens(prefix)
        return VisionTurn(True, IMAGE_RULE, prefix, tuple(images), metrics)
