"""Image token costs per family (pure formulas) and the per-turn visual token budget.

The same cost models are checked against the real processors in tests/llm/test_transformers_vlm.py.
"""

from __future__ import annotations

import pytest
from video_synth import room

from cadence.errors import ConfigError, ImageError
from cadence.video.budget import VisualBudget, plan_frames
from cadence.video.frames import VideoFrame
from cadence.video.images import resize_pixels
from cadence.video.tokens import (
    Idefics3Cost,
    LlavaOnevisionCost,
    MllamaCost,
    Qwen2VLCost,
    cap_size,
    cost_model,
)


def _frame(w: int, h: int, t: float = 0.0) -> VideoFrame:
    return VideoFrame.at(resize_pixels(room(0), (w, h)), t)


def test_cap_preserves_aspect_and_never_upscales():
    assert cap_size(1280, 720, 640) == (640, 360)
    assert cap_size(300, 200, 640) == (300, 200)
    assert cap_size(100, 5000, 500) == (10, 500)
    with pytest.raises(ConfigError):
        cap_size(10, 10, 0)


def test_qwen2_vl_grid_over_four():
    q = Qwen2VLCost()
    cost = q.cost(640, 480)  # resized to 644×476 (multiples of 28): 46×34 patches
    assert cost.encoder_size == (644, 476) and cost.tokens == 46 * 34 // 4
    assert q.cost(10_000, 10_000).tokens <= q.max_pixels // (28 * 28)  # max_pixels bounds it
    with pytest.raises(ImageError, match="elongated"):
        q.cost(10_000, 20)


def test_idefics3_seq_times_tiles_plus_global_view():
    smol = Idefics3Cost(tile_px=512, image_seq_len=64, longest_edge=2048)
    assert smol.fit(1280, 720, 2048) == (2048, 1536)  # the processor's own grid: 4×3
    assert smol.cost(2048, 1536).tokens == 64 * (4 * 3 + 1)
    assert smol.fit(640, 480, 768) == (512, 512)  # under a 768 px cap: one tile, no split
    assert smol.cost(512, 512).tokens == 64
    assert smol.processor_kwargs() == {"do_resize": False}
    unsplit = Idefics3Cost(splitting=False)
    assert unsplit.cost(2048, 1536).tokens == 64 and unsplit.processor_kwargs() == {}


def test_llava_onevision_anyres_and_multi_image():
    lo = LlavaOnevisionCost()
    single = lo.cost(640, 480).tokens
    assert single > 729  # base view plus the unpadded grid and its newlines
    assert lo.cost(640, 480, images_in_prompt=3).tokens == 730  # base view + newline only
    assert LlavaOnevisionCost(drop_cls=True).cost(640, 480, 3).tokens == 729


def test_mllama_is_one_token_whatever_the_size():
    assert MllamaCost().cost(4000, 3000).tokens == 1


def test_cost_models_by_name():
    assert isinstance(cost_model("qwen2_5_vl"), Qwen2VLCost)
    assert cost_model("smolvlm", tile_px=384).tile_px == 384  # type: ignore[attr-defined]
    assert cost_model("fixed", tokens_per_image=85).cost(1, 1).tokens == 85
    with pytest.raises(ConfigError, match="unknown image-cost family"):
        cost_model("gpt-9")
    with pytest.raises(ConfigError, match="bad parameters"):
        cost_model("qwen2_vl", patch=3)


def test_budget_drops_oldest_frames_first():
    frames = [_frame(640, 480, t) for t in range(4)]
    per = Qwen2VLCost().cost(640, 480).tokens + 2  # + wrapper overhead
    budget = VisualBudget(max_visual_tokens=2 * per + 10, max_side_px=640)
    plan = plan_frames(frames, Qwen2VLCost(), budget, context_window=32_000, history_tokens=0)
    assert [f.time_s for f in plan.frames] == [2.0, 3.0]
    assert plan.dropped_oldest == 2 and plan.resolution_steps == 0
    assert plan.tokens <= plan.available_tokens
    assert "dropped 2 oldest" in plan.decisions[0]


def test_budget_then_lowers_resolution_when_history_fills_the_context():
    frames = [_frame(1280, 960, t) for t in range(3)]
    budget = VisualBudget(max_visual_tokens=4096, max_side_px=1280, min_side_px=224)
    plan = plan_frames(frames, Qwen2VLCost(), budget, context_window=4096, history_tokens=3600)
    assert plan.available_tokens == 4096 - 3600 - budget.reply_reserve_tokens
    assert len(plan.frames) == 1 and plan.frames[0].time_s == 2.0  # the newest stays
    assert plan.resolution_steps >= 1 and plan.max_side_px < 1280
    assert plan.tokens <= plan.available_tokens
    assert max(plan.sizes[0]) <= plan.max_side_px
    assert any("lowered the resolution" in d for d in plan.decisions)


def test_budget_sends_nothing_when_nothing_fits():
    plan = plan_frames([_frame(640, 480)], Idefics3Cost(), VisualBudget(),
                       context_window=2048, history_tokens=2000)
    assert plan.frames == [] and plan.available_tokens == 0
    assert "sent no image" in plan.decisions[-1]


def test_budget_validates_itself():
    with pytest.raises(ConfigError):
        VisualBudget(resolution_step=1.5)
    with pytest.raises(ConfigError):
        VisualBudget(min_side_px=800, max_side_px=400)
