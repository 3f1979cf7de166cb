"""The per-turn visual token budget: fit sampled frames into what the context has left.

Order of degradation (stated, recorded): drop the oldest frames down to `min_frames`, then
lower the resolution cap step by step down to `min_side_px`, then send no image at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from cadence.errors import ConfigError
from cadence.video.frames import VideoFrame
from cadence.video.tokens import CostModel, ImageCost


@dataclass(frozen=True)
class VisualBudget:
    """Limits for the images of one turn (profile `[budgets]`/`[vlm]` keys of the same names)."""

    max_visual_tokens: int = 2048  # per turn, whatever the context could hold
    max_side_px: int = 768  # resolution cap, long side, aspect preserved
    min_side_px: int = 224  # the degrade never goes below this
    resolution_step: float = 0.75  # each degrade step multiplies the cap by this
    reply_reserve_tokens: int = 256  # kept free for the answer
    max_frames: int = 8
    min_frames: int = 1

    def __post_init__(self) -> None:
        if not 0 < self.resolution_step < 1:
            raise ConfigError("resolution_step must be between 0 and 1")
        if self.min_side_px < 16 or self.max_side_px < self.min_side_px:
            raise ConfigError("need 16 <= min_side_px <= max_side_px")
        if self.max_frames < 1 or not 1 <= self.min_frames <= self.max_frames:
            raise ConfigError("need 1 <= min_frames <= max_frames")

    def available(self, context_window: int, history_tokens: int) -> int:
        """Tokens this turn's vision may use: the per-turn cap or what the context has left."""
        room = context_window - history_tokens - self.reply_reserve_tokens
        return max(0, min(self.max_visual_tokens, room))


@dataclass
class FramePlan:
    """The frames a turn sends, the size each is resized to, and what each costs."""

    frames: list[VideoFrame]
    sizes: list[tuple[int, int]]
    costs: list[ImageCost]
    max_side_px: int
    available_tokens: int
    dropped_oldest: int = 0
    resolution_steps: int = 0
    decisions: list[str] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return sum(c.tokens + c.overhead for c in self.costs)


def _price(frames: Sequence[VideoFrame], model: CostModel, side: int
           ) -> tuple[list[tuple[int, int]], list[ImageCost]]:
    sizes = [model.fit(f.width, f.height, side) for f in frames]
    n = len(frames)
    return sizes, [model.cost(w, h, images_in_prompt=n) for w, h in sizes]


def plan_frames(
    frames: Sequence[VideoFrame], model: CostModel, budget: VisualBudget, *,
    context_window: int, history_tokens: int,
) -> FramePlan:
    """Choose frames and sizes whose total cost fits the turn's available image tokens."""
    available = budget.available(context_window, history_tokens)
    chosen = list(frames)[-budget.max_frames:]
    dropped = len(frames) - len(chosen)
    decisions: list[str] = []
    if dropped:
        decisions.append(f"kept the newest {budget.max_frames} of {len(frames)} sampled frames")
    side = budget.max_side_px
    sizes, costs = _price(chosen, model, side)

    def total() -> int:
        return sum(c.tokens + c.overhead for c in costs)

    while chosen and total() > available and len(chosen) > budget.min_frames:
        chosen.pop(0)
        dropped += 1
        sizes, costs = _price(chosen, model, side)
    if dropped and total() <= available:
        decisions.append(f"dropped {dropped} oldest frame(s) to fit {available} image tokens")
    steps = 0
    while chosen and total() > available and side > budget.min_side_px:
        side = max(budget.min_side_px, int(side * budget.resolution_step))
        steps += 1
        sizes, costs = _price(chosen, model, side)
    if steps:
        decisions.append(f"lowered the resolution cap to {side}px in {steps} step(s)")
    if chosen and total() > available:
        decisions.append(
            f"sent no image: {len(chosen)} frame(s) at {side}px cost {total()} tokens, "
            f"only {available} available"
        )
        dropped += len(chosen)
        chosen, sizes, costs = [], [], []
    return FramePlan(chosen, sizes, costs, side, available, dropped, steps, decisions)
