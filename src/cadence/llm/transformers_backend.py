"""Vision-language models through transformers, streamed from a worker thread.

Idefics3/SmolVLM, Qwen2-VL/Qwen2.5-VL, LLaVA-OneVision and Mllama load by path; each
image's token cost is predicted before the call and checked against the processor's output.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cadence.errors import InputError, ModelError, ModelNotInstalled, StageTimeout
from cadence.llm.base import ChatMessage, GenerationOptions
from cadence.llm.vlm_processor import (
    FAMILY_OF_MODEL_TYPE,
    check_geometry,
    image_token_of,
    load_processor,
    render_prompt,
)
from cadence.video.images import Resize, decode_image, resize_pixels
from cadence.video.tokens import (
    CostModel,
    Idefics3Cost,
    ImageCost,
    LlavaOnevisionCost,
    MllamaCost,
    Qwen2VLCost,
)

log = logging.getLogger(__name__)


def cost_model_from_processor(processor: Any, family: str) -> CostModel:
    """The pure-Python cost model, parameterised from this checkpoint's processor."""
    ip = processor.image_processor
    if family == "qwen2_vl":
        return Qwen2VLCost(patch_size=int(ip.patch_size), merge_size=int(ip.merge_size),
                           min_pixels=int(ip.size["shortest_edge"]),
                           max_pixels=int(ip.size["longest_edge"]))
    if family == "idefics3":
        return Idefics3Cost(tile_px=int(ip.max_image_size["longest_edge"]),
                            image_seq_len=int(processor.image_seq_len),
                            longest_edge=int(ip.size["longest_edge"]),
                            splitting=bool(ip.do_image_splitting))
    if family == "llava_onevision":
        side = ip.size.get("height") or ip.size.get("shortest_edge")
        return LlavaOnevisionCost(
            tile_px=int(side), num_image_tokens=int(processor.num_image_tokens),
            pinpoints=tuple((int(h), int(w)) for h, w in ip.image_grid_pinpoints),
            max_patches=int(str(processor.vision_aspect_ratio).removeprefix("anyres_max_")),
            drop_cls=processor.vision_feature_select_strategy == "default",
        )
    if family == "mllama":
        return MllamaCost(tile_px=int(ip.size["height"]), max_tiles=int(ip.max_image_tiles))
    raise ModelError(f"no image cost model for family {family!r}")


@dataclass(frozen=True)
class PreparedPrompt:
    """Processor output plus the accounting checked at this seam."""

    inputs: Any  # transformers BatchFeature
    prompt_tokens: int
    image_tokens: int
    costs: tuple[ImageCost, ...]


class _StopOnEvent:
    """A stopping criterion: generation ends at the next step once the event is set."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool,
                          device=input_ids.device)


class TransformersVLM:
    """An `LLMBackend` over a transformers image-text-to-text model.

    One generation at a time per model (a lock held by the worker thread); other callers
    wait for it. Cancelling the consuming task or `aclose()` stops generation at the next
    token; an error inside generate() is re-raised to the reader as `ModelError`.
    """

    def __init__(self, model: Any, processor: Any, *, name: str, assembled: bool = False,
                 stream_timeout_s: float = 60.0) -> None:
        config = model.config
        self.family = FAMILY_OF_MODEL_TYPE.get(config.model_type, "")
        check_geometry(config, processor)
        self.name = name
        self.model = model
        self.processor = processor
        self.assembled = assembled  # True: built without a video processor (no torchvision)
        self.cost = cost_model_from_processor(processor, self.family)
        text = getattr(config, "text_config", config)
        self.context_window = int(getattr(text, "max_position_embeddings", 4096))
        self.image_token, self.image_token_id = image_token_of(processor)
        self.stream_timeout_s = stream_timeout_s
        self.max_side_px = 768  # the cap for images that arrive without a predicted cost
        self._lock = threading.Lock()
        self.generated_tokens = 0  # of the last generation (tests and metrics)
        self.last_worker: threading.Thread | None = None  # the latest generation thread

    @classmethod
    def load(cls, path: str | Path, *, device: str = "cpu", dtype: str | None = None,
             threads: int | None = None, stream_timeout_s: float = 60.0) -> TransformersVLM:
        """Load a local checkpoint directory (the hub is not reachable from here)."""
        try:
            import torch
            from transformers import AutoConfig, AutoModelForImageTextToText
        except ImportError:
            raise ModelNotInstalled(
                "transformers VLMs need the gpu extra: pip install 'cadence[gpu]'"
            ) from None
        p = Path(path)
        if not (p / "config.json").is_file():
            raise ModelError(f"{p}: not a model directory (no config.json)")
        if threads:
            torch.set_num_threads(threads)
        config = AutoConfig.from_pretrained(p)
        if config.model_type not in FAMILY_OF_MODEL_TYPE:
            raise ModelError(f"{p}: model type {config.model_type!r} is not a supported VLM "
                             f"({', '.join(sorted(FAMILY_OF_MODEL_TYPE))})")
        processor, assembled = load_processor(p, config.model_type)
        torch_dtype = getattr(torch, dtype) if dtype else "auto"
        try:
            model: Any = AutoModelForImageTextToText.from_pretrained(p, dtype=torch_dtype)
        except (OSError, ValueError) as exc:
            raise ModelError(f"{p}: cannot load the model weights ({exc})") from None
        model = model.to(device)
        model.eval()
        return cls(model, processor, name=p.name, assembled=assembled,
                   stream_timeout_s=stream_timeout_s)

    def count_tokens(self, text: str) -> int:
        return len(self.processor.tokenizer(text, add_special_tokens=False)["input_ids"])

    def image_cost(self, width: int, height: int, images_in_prompt: int = 1) -> ImageCost:
        return self.cost.cost(width, height, images_in_prompt)

    def _fit(self, pixels: Any) -> Any:
        h, w = pixels.shape[:2]
        size = self.cost.fit(w, h, self.max_side_px)
        if size == (w, h):
            return pixels
        log.info("%s", Resize("uncosted", (w, h), size, f"{self.family} fit, cap "
                                                        f"{self.max_side_px}px"))
        return resize_pixels(pixels, size)

    def _chat(self, messages: Sequence[ChatMessage]) -> tuple[list[dict[str, Any]], list[Any]]:
        from PIL import Image

        chat: list[dict[str, Any]] = []
        images: list[Any] = []
        for msg in messages:
            if msg.audio:
                raise InputError(f"{self.name} takes images, not audio")
            parts: list[dict[str, Any]] = []
            for part in msg.images:
                pixels = decode_image(part.data)
                if part.tokens is None:  # not through VisionContext: fit it here, same rule
                    pixels = self._fit(pixels)
                images.append((Image.fromarray(pixels, "RGB"), part))
                parts.append({"type": "image"})
            role, text = msg.role, msg.content
            if role == "tool":  # VLM chat templates have no tool role
                role, text = "user", f"Result of {msg.name or 'a tool'}: {text}"
            if text or not parts:
                parts.append({"type": "text", "text": text})
            chat.append({"role": role, "content": parts})
        return chat, images

    def prepare(self, messages: Sequence[ChatMessage]) -> PreparedPrompt:
        """Render, process and check: every image's predicted cost must be what it gets."""
        chat, images = self._chat(messages)
        n = len(images)
        costs: list[ImageCost] = []
        for pil, part in images:
            cost = self.cost.cost(pil.width, pil.height, n)
            if part.tokens is not None and part.tokens != cost.tokens:
                raise ModelError(
                    f"token-cost contract broken: a {pil.width}x{pil.height} image was costed "
                    f"{part.tokens} tokens but {self.name} ({self.family}) gives it "
                    f"{cost.tokens}; cost images with this backend's cost model"
                )
            costs.append(cost)
        prompt = render_prompt(self.processor, chat)
        kwargs: dict[str, Any] = {"return_tensors": "pt"}
        if images:
            pil_images = [pil for pil, _ in images]
            nested = self.family in ("idefics3", "mllama", "llava_onevision")
            kwargs["images"] = [pil_images] if nested else pil_images
            kwargs.update(self.cost.processor_kwargs())
        inputs = self.processor(text=[prompt], **kwargs)
        ids = inputs["input_ids"]
        got = int((ids == self.image_token_id).sum())
        want = sum(c.tokens for c in costs)
        if got != want:
            raise ModelError(
                f"token-cost contract broken: predicted {want} image tokens for {n} image(s), "
                f"the {type(self.processor).__name__} produced {got}"
            )
        return PreparedPrompt(inputs, int(ids.shape[1]), got, tuple(costs))

    async def warm(self, system_prompt: str) -> None:
        """One token of generation, so the first real turn pays no lazy initialisation."""
        async for _ in self.stream([ChatMessage("system", system_prompt),
                                    ChatMessage("user", "Hi")],
                                   GenerationOptions(max_tokens=1, temperature=0.0)):
            pass

    def _generate(self, prepared: PreparedPrompt, streamer: Any, stop: threading.Event,
                  opts: GenerationOptions, failure: list[BaseException]) -> None:
        from transformers import StoppingCriteriaList

        try:
            with self._lock:
                if stop.is_set():
                    return
                inputs = prepared.inputs.to(self.model.device)
                if self.model.dtype.is_floating_point:
                    inputs = inputs.to(self.model.device, dtype=self.model.dtype)
                sampling: dict[str, Any] = {"do_sample": False}
                if opts.temperature > 0:
                    sampling = {"do_sample": True, "temperature": opts.temperature}
                out = self.model.generate(
                    **inputs, streamer=streamer, max_new_tokens=opts.max_tokens,
                    stopping_criteria=StoppingCriteriaList([_StopOnEvent(stop)]), **sampling,
                )
                self.generated_tokens = int(out.shape[1] - inputs["input_ids"].shape[1])
        except BaseException as exc:  # re-raised in the reader; never lost in this thread
            failure.append(exc)
        finally:
            streamer.end()  # wakes the reader whatever happened

    async def stream(self, messages: Sequence[ChatMessage],
                     options: GenerationOptions | None = None) -> AsyncIterator[str]:
        from transformers import TextIteratorStreamer

        opts = options or GenerationOptions()
        prepared = await asyncio.to_thread(self.prepare, messages)
        streamer = TextIteratorStreamer(self.processor.tokenizer, skip_prompt=True,
                                        skip_special_tokens=True, timeout=self.stream_timeout_s)
        stop = threading.Event()
        failure: list[BaseException] = []
        worker = threading.Thread(target=self._generate, name=f"vlm-{self.name}", daemon=True,
                                  args=(prepared, streamer, stop, opts, failure))
        worker.start()
        self.last_worker = worker
        pieces = iter(streamer)
        text = ""
        try:
            while True:
                try:
                    piece = await asyncio.to_thread(next, pieces, None)
                except queue.Empty:
                    raise StageTimeout(
                        f"{self.name} produced no token for {self.stream_timeout_s:.0f} s"
                    ) from None
                if piece is None:
                    break
                if not piece:
                    continue
                if opts.stop:
                    text += piece
                    cut = min((text.find(s) for s in opts.stop if s in text), default=-1)
                    if cut >= 0:
                        tail = text[len(text) - len(piece):cut]
                        if tail:
                            yield tail
                        break
                yield piece
            if failure:
                exc = failure[0]
                raise ModelError(f"{self.name} failed while generating: {exc}") from exc
        finally:
            stop.set()  # cancel, aclose() or a stop string: generation ends at the next token
            # Wait for that step, so the model is free (and no thread left) once we return.
            await asyncio.to_thread(worker.join, self.stream_timeout_s)
