"""Token cost of an image per model family, known before the call (pure Python, no torch).

Each model mirrors its family's processor: the size we resize a frame to (`fit`), and the
number of image placeholder tokens the processor will insert for it (`cost`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from cadence.errors import ConfigError, ImageError


@dataclass(frozen=True)
class ImageCost:
    """What one image costs a model: context tokens, encoder input size, encoder passes."""

    tokens: int  # image placeholder tokens in the prompt (what the processor inserts)
    encoder_size: tuple[int, int]  # (width, height) after the processor's own resize
    tiles: int = 1  # encoder passes (tiles plus a global view); 0 when not modelled
    overhead: int = 0  # approximate wrapper tokens around the placeholders (markers, rows)


class CostModel(Protocol):
    family: str

    def fit(self, width: int, height: int, max_side_px: int) -> tuple[int, int]:
        """The size a frame is resized to before the processor, for a long-side cap."""
        ...

    def cost(self, width: int, height: int, images_in_prompt: int = 1) -> ImageCost: ...

    def processor_kwargs(self) -> dict[str, Any]:
        """Image kwargs passed on every processor call so it agrees with `cost`."""
        ...


def cap_size(width: int, height: int, max_side_px: int) -> tuple[int, int]:
    """Aspect-preserving downscale so the long side is at most `max_side_px` (never upscales)."""
    if max_side_px < 1:
        raise ConfigError(f"max_side_px must be positive, got {max_side_px}")
    long_side = max(width, height)
    if long_side <= max_side_px:
        return width, height
    scale = max_side_px / long_side
    return max(1, round(width * scale)), max(1, round(height * scale))


@dataclass(frozen=True)
class Qwen2VLCost:
    """Qwen2-VL / Qwen2.5-VL: native resolution, 14-px patches merged 2×2; no tiling."""

    patch_size: int = 14
    merge_size: int = 2
    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 1280
    family: str = "qwen2_vl"

    def _smart_resize(self, height: int, width: int) -> tuple[int, int]:
        factor = self.patch_size * self.merge_size
        if max(height, width) / min(height, width) > 200:
            raise ImageError(
                f"a {width}×{height} image is too elongated for {self.family} (aspect over 200:1)"
            )
        h_bar = round(height / factor) * factor
        w_bar = round(width / factor) * factor
        if h_bar * w_bar > self.max_pixels:
            beta = math.sqrt((height * width) / self.max_pixels)
            h_bar = max(factor, math.floor(height / beta / factor) * factor)
            w_bar = max(factor, math.floor(width / beta / factor) * factor)
        elif h_bar * w_bar < self.min_pixels:
            beta = math.sqrt(self.min_pixels / (height * width))
            h_bar = math.ceil(height * beta / factor) * factor
            w_bar = math.ceil(width * beta / factor) * factor
        return h_bar, w_bar

    def fit(self, width: int, height: int, max_side_px: int) -> tuple[int, int]:
        return cap_size(width, height, max_side_px)

    def cost(self, width: int, height: int, images_in_prompt: int = 1) -> ImageCost:
        h, w = self._smart_resize(height, width)
        patches = (h // self.patch_size) * (w // self.patch_size)
        return ImageCost(patches // self.merge_size**2, (w, h), 1, overhead=2)

    def processor_kwargs(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class Idefics3Cost:
    """Idefics3 / SmolVLM: square tiles of `tile_px` plus a global view, `seq` tokens each.

    The processor upscales every image so its long side is `longest_edge` (up to 4×4 tiles
    for a small frame); we fit frames to a tile grid under our own cap instead and call the
    processor with `do_resize=False`, so the grid is our recorded decision, not its.
    """

    tile_px: int = 512
    image_seq_len: int = 64
    longest_edge: int = 2048
    splitting: bool = True
    family: str = "idefics3"

    def fit(self, width: int, height: int, max_side_px: int) -> tuple[int, int]:
        t = self.tile_px
        if not self.splitting:
            return cap_size(width, height, max_side_px)
        k = max(1, min(max_side_px, self.longest_edge) // t)  # tiles along the long side
        if width >= height:
            rows = max(1, math.ceil(height * k / width))
            return k * t, rows * t
        cols = max(1, math.ceil(width * k / height))
        return cols * t, k * t

    def cost(self, width: int, height: int, images_in_prompt: int = 1) -> ImageCost:
        t = self.tile_px
        if not self.splitting:
            return ImageCost(self.image_seq_len, (t, t), 1, overhead=3)
        # Mirrors resize_for_vision_encoder: both sides rounded up to tile multiples.
        aspect = width / height
        if width >= height:
            w = math.ceil(width / t) * t
            h = math.ceil(int(w / aspect) / t) * t
        else:
            h = math.ceil(height / t) * t
            w = math.ceil(int(h * aspect) / t) * t
        rows, cols = h // t, w // t
        if rows * cols <= 1:
            return ImageCost(self.image_seq_len, (t, t), 1, overhead=3)
        tiles = rows * cols + 1
        return ImageCost(self.image_seq_len * tiles, (w, h), tiles, overhead=2 * tiles + rows + 2)

    def processor_kwargs(self) -> dict[str, Any]:
        return {"do_resize": False} if self.splitting else {}


def _best_resolution(height: int, width: int, pinpoints: Sequence[Sequence[int]]
                     ) -> tuple[int, int]:
    best = (int(pinpoints[0][0]), int(pinpoints[0][1]))
    max_effective, min_wasted = 0, float("inf")
    for ph, pw in pinpoints:
        scale = min(pw / width, ph / height)
        effective = min(int(width * scale) * int(height * scale), width * height)
        wasted = pw * ph - effective
        if effective > max_effective or (effective == max_effective and wasted < min_wasted):
            max_effective, min_wasted, best = effective, wasted, (int(ph), int(pw))
    return best


@dataclass(frozen=True)
class LlavaOnevisionCost:
    """LLaVA-OneVision: a base view plus an AnyRes grid (unpadded, a newline per row).

    With several images in one prompt each gets only the base view (+1 newline).
    """

    tile_px: int = 384
    num_image_tokens: int = 729
    pinpoints: tuple[tuple[int, int], ...] = field(
        default_factory=lambda: tuple((384 * r, 384 * c) for r in range(1, 7) for c in range(1, 7))
    )
    max_patches: int = 9  # the N of anyres_max_N
    drop_cls: bool = False  # vision_feature_select_strategy == "default"
    family: str = "llava_onevision"

    def fit(self, width: int, height: int, max_side_px: int) -> tuple[int, int]:
        return cap_size(width, height, max_side_px)

    def cost(self, width: int, height: int, images_in_prompt: int = 1) -> ImageCost:
        side = math.isqrt(self.num_image_tokens)
        if images_in_prompt > 1:
            tokens = self.num_image_tokens + 1
            return ImageCost(tokens - int(self.drop_cls), (self.tile_px, self.tile_px), 1)
        best_h, best_w = _best_resolution(height, width, self.pinpoints)
        cur_h, cur_w = side * (best_h // self.tile_px), side * (best_w // self.tile_px)
        if width / height > cur_w / cur_h:
            new_h = int(round(height * (cur_w / width), 7))
            cur_h -= ((cur_h - new_h) // 2) * 2
        else:
            new_w = int(round(width * (cur_h / height), 7))
            cur_w -= ((cur_w - new_w) // 2) * 2
        unpadded, newlines = cur_h * cur_w, cur_h
        ratio = math.sqrt(cur_h * cur_w / (self.max_patches * side**2))
        if ratio > 1.1:
            unpadded = int(cur_h // ratio) * int(cur_w // ratio)
            newlines = int(cur_h // ratio)
        tokens = unpadded + newlines + self.num_image_tokens - int(self.drop_cls)
        tiles = (best_h // self.tile_px) * (best_w // self.tile_px) + 1
        return ImageCost(tokens, (best_w, best_h), tiles)

    def processor_kwargs(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class MllamaCost:
    """Llama 3.2 Vision: cross-attention, so one `<|image|>` token in the context, always."""

    tile_px: int = 560
    max_tiles: int = 4
    family: str = "mllama"

    def fit(self, width: int, height: int, max_side_px: int) -> tuple[int, int]:
        return cap_size(width, height, max_side_px)

    def cost(self, width: int, height: int, images_in_prompt: int = 1) -> ImageCost:
        # The tile canvas only costs encoder time, not context: not modelled (tiles=0).
        return ImageCost(1, (width, height), 0)

    def processor_kwargs(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class FixedCost:
    """A server whose model we do not model: a stated flat cost per image (aspect capped)."""

    tokens_per_image: int = 256
    family: str = "fixed"

    def fit(self, width: int, height: int, max_side_px: int) -> tuple[int, int]:
        return cap_size(width, height, max_side_px)

    def cost(self, width: int, height: int, images_in_prompt: int = 1) -> ImageCost:
        return ImageCost(self.tokens_per_image, (width, height), 1)

    def processor_kwargs(self) -> dict[str, Any]:
        return {}


_FAMILIES: dict[str, type] = {
    "qwen2_vl": Qwen2VLCost, "idefics3": Idefics3Cost, "llava_onevision": LlavaOnevisionCost,
    "mllama": MllamaCost, "fixed": FixedCost,
}
_ALIASES = {"qwen2_5_vl": "qwen2_vl", "smolvlm": "idefics3"}


def cost_model(family: str, **params: Any) -> CostModel:
    """A cost model by family name (config `vlm.family`), with its processor's parameters."""
    name = _ALIASES.get(family, family)
    cls = _FAMILIES.get(name)
    if cls is None:
        known = ", ".join(sorted([*_FAMILIES, *_ALIASES]))
        raise ConfigError(f"unknown image-cost family {family!r}; known: {known}")
    try:
        model: CostModel = cls(**params)
    except TypeError as exc:
        raise ConfigError(f"bad parameters for the {family} cost model: {exc}") from None
    return model
