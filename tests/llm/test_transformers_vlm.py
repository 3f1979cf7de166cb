"""Tiny random-weight VLMs of each family, built from configs here, through the real backend.

Predicted image tokens equal the processor's; streaming, cancellation, errors, round trips.
"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from cadence.errors import ModelError, StageTimeout
from cadence.llm.base import ChatMessage, GenerationOptions, ImagePart
from cadence.llm.transformers_backend import TransformersVLM
from cadence.llm.vlm_tiny import FAMILIES, build_tiny_vlm
from cadence.video.budget import VisualBudget
from cadence.video.context import VisionContext
from cadence.video.frames import VideoFrame
from cadence.video.images import encode_png, resize_pixels
from cadence.video.samplers import FixedRate

SIZES = [(320, 240), (1280, 720), (100, 700), (64, 64), (33, 500), (500, 33)]
GREEDY = GenerationOptions(max_tokens=6, temperature=0.0)
_models: dict[str, TransformersVLM] = {}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {f: build_tiny_vlm(f, tmp_path_factory.mktemp(f)) for f in FAMILIES}


def _vlm(model_dirs: dict[str, Path], family: str) -> TransformersVLM:
    if family not in _models:
        _models[family] = TransformersVLM.load(model_dirs[family], stream_timeout_s=20)
    return _models[family]


def _torchvision_works() -> bool:
    try:
        import torchvision  # noqa: F401
    except Exception:  # absent, or a CUDA build beside CPU torch (fails on import)
        return False
    return True


def _pixels(w: int, h: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def _part(vlm: TransformersVLM, w: int, h: int, n: int = 1, cap: int = 768) -> ImagePart:
    size = vlm.cost.fit(w, h, cap)
    cost = vlm.cost.cost(*size, images_in_prompt=n)
    return ImagePart(encode_png(resize_pixels(_pixels(w, h), size)), tokens=cost.tokens)


@pytest.mark.parametrize("family", FAMILIES)
def test_predicted_image_tokens_equal_the_processors(model_dirs, family):
    from cadence.llm.base import LLMBackend

    vlm = _vlm(model_dirs, family)
    assert isinstance(vlm, LLMBackend)
    if family in ("idefics3", "mllama"):  # no video processor: AutoProcessor always works
        assert not vlm.assembled
    else:
        assert vlm.assembled == (not _torchvision_works())
    for w, h in SIZES:
        for n in (1, 2):
            parts = tuple(_part(vlm, w, h, n) for _ in range(n))
            prepared = vlm.prepare([ChatMessage("user", "what does the sign say", images=parts)])
            ids = prepared.inputs["input_ids"]
            counted = int((ids == vlm.image_token_id).sum())  # what the processor produced
            assert counted == prepared.image_tokens == sum(p.tokens or 0 for p in parts), (w, h)


def test_idefics3_fit_matches_the_processors_own_resize(model_dirs):
    """At full resolution our tile grid is the one the processor would pick by itself."""
    vlm = _vlm(model_dirs, "idefics3")
    cost = vlm.cost
    for w, h in SIZES:
        image = _pixels(w, h)
        from PIL import Image

        prompt = vlm.processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}],
            add_generation_prompt=True)
        out = vlm.processor(text=[prompt], images=[[Image.fromarray(image)]],
                            return_tensors="pt")
        own = int((out["input_ids"] == vlm.image_token_id).sum())
        fitted = cost.fit(w, h, cost.longest_edge)  # type: ignore[attr-defined]
        assert own == cost.cost(*fitted).tokens, (w, h)


def test_a_wrong_predicted_cost_is_refused(model_dirs):
    vlm = _vlm(model_dirs, "qwen2_vl")
    part = _part(vlm, 320, 240)
    wrong = ImagePart(part.data, part.mime, (part.tokens or 0) + 1)
    with pytest.raises(ModelError, match="token-cost contract broken"):
        vlm.prepare([ChatMessage("user", "hi", images=(wrong,))])


@pytest.mark.parametrize("family", FAMILIES)
async def test_streams_text_deltas(model_dirs, family):
    vlm = _vlm(model_dirs, family)
    msgs = [ChatMessage("system", "Be brief."),
            ChatMessage("user", "What is this?", images=(_part(vlm, 320, 240),))]
    pieces = [p async for p in vlm.stream(msgs, GREEDY)]
    assert pieces and all(isinstance(p, str) and p for p in pieces)
    assert vlm.last_worker is not None and not vlm.last_worker.is_alive()
    assert vlm.generated_tokens == GREEDY.max_tokens  # eos suppressed in the tiny models
    again = [p async for p in vlm.stream(msgs, GREEDY)]
    assert again == pieces  # greedy: deterministic


async def test_cancelling_the_consumer_stops_generation(model_dirs):
    vlm = _vlm(model_dirs, "idefics3")
    msgs = [ChatMessage("user", "Describe it at length.", images=(_part(vlm, 320, 240),))]
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in vlm.stream(msgs, GenerationOptions(max_tokens=2000, temperature=0.0)):
            first.set()
            await asyncio.sleep(0.05)

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 30)
    worker = vlm.last_worker
    assert worker is not None and worker.is_alive()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The abandoned stream is closed by asyncio's async-generator finalizer: soon, not inline.
    await asyncio.to_thread(worker.join, 2.0)
    assert not worker.is_alive(), "generation kept running after the consumer was cancelled"
    assert vlm.generated_tokens < 2000


async def test_aclose_stops_generation_and_frees_the_model(model_dirs):
    vlm = _vlm(model_dirs, "llava_onevision")
    msgs = [ChatMessage("user", "Go on.", images=(_part(vlm, 64, 64),))]
    stream = vlm.stream(msgs, GenerationOptions(max_tokens=2000, temperature=0.0))
    await stream.__anext__()
    await stream.aclose()  # type: ignore[attr-defined]
    assert vlm.last_worker is not None and not vlm.last_worker.is_alive()
    assert vlm.generated_tokens < 2000
    assert [p async for p in vlm.stream(msgs, GREEDY)]  # the next caller is served


async def test_errors_inside_generate_reach_the_reader(model_dirs, monkeypatch):
    vlm = _vlm(model_dirs, "mllama")

    def boom(**kwargs: Any) -> Any:
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(vlm.model, "generate", boom)
    with pytest.raises(ModelError, match="simulated"):
        async for _ in vlm.stream([ChatMessage("user", "hi")], GREEDY):
            pass


async def test_a_stalled_generate_times_out(model_dirs, monkeypatch):
    vlm = _vlm(model_dirs, "mllama")
    release = threading.Event()

    def stall(**kwargs: Any) -> Any:
        release.wait(5)
        raise RuntimeError("stalled")

    monkeypatch.setattr(vlm.model, "generate", stall)
    monkeypatch.setattr(vlm, "stream_timeout_s", 0.3)
    with pytest.raises(StageTimeout):
        try:
            async for _ in vlm.stream([ChatMessage("user", "hi")], GREEDY):
                pass
        finally:
            release.set()


@pytest.mark.parametrize("family", ["qwen2_vl", "idefics3"])
def test_save_and_load_by_path_round_trips(model_dirs, family, tmp_path):
    import torch

    a = _vlm(model_dirs, family)
    a.model.save_pretrained(tmp_path)
    a.processor.save_pretrained(tmp_path)
    b = TransformersVLM.load(tmp_path)
    assert b.assembled == a.assembled and b.cost == a.cost
    msgs = [ChatMessage("user", "what is it", images=(_part(a, 320, 240),))]
    pa, pb = a.prepare(msgs), b.prepare(msgs)
    assert torch.equal(pa.inputs["input_ids"], pb.inputs["input_ids"])
    with torch.no_grad():
        la = a.model(**pa.inputs).logits
        lb = b.model(**pb.inputs).logits
    assert torch.allclose(la, lb)


def test_processor_and_model_geometry_must_agree(tmp_path):
    path = build_tiny_vlm("smolvlm", tmp_path)
    cfg = json.loads((path / "processor_config.json").read_text())
    cfg["image_seq_len"] = 5
    (path / "processor_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="image_seq_len"):
        TransformersVLM.load(path)


def test_video_input_is_refused_clearly(model_dirs):
    vlm = _vlm(model_dirs, "qwen2_vl")
    with pytest.raises(ModelError, match="torchvision"):
        vlm.processor(text=["<|video_pad|>"], videos=[np.zeros((2, 28, 28, 3), np.uint8)])


async def test_frames_to_answer_within_the_context(model_dirs):
    """The image path end to end: buffered frames → VisionContext → backend → text."""
    vlm = _vlm(model_dirs, "qwen2_vl")
    frames = [VideoFrame.at(_pixels(1280, 720, seed=i), i * 0.5) for i in range(6)]
    ctx = VisionContext("images", cost=vlm.cost, context_window=vlm.context_window,
                        count_tokens=vlm.count_tokens, sampler=FixedRate(fps=2, window_s=3),
                        budget=VisualBudget(max_frames=4))
    turn = await ctx.for_turn("What do you see?", frames)
    assert turn.metrics.frames_sent == 4 and len(turn.images) == 4
    assert all(img.tokens for img in turn.images)
    resizes = turn.metrics.resizes
    assert sum("1280x720 -> 768x432 (qwen2_vl fit, cap 768px)" in r for r in resizes) == 4
    assert sum("processor (predicted)" in r for r in resizes) == 4  # smart_resize, max_pixels
    msgs = turn.apply([ChatMessage("system", "Be brief."), ChatMessage("user", "What do you see?")])
    prepared = vlm.prepare(msgs)
    assert prepared.image_tokens == sum(img.tokens or 0 for img in turn.images)
    assert [p async for p in vlm.stream(msgs, GREEDY)]

    # The history has filled the context: oldest frames go, then resolution, all recorded.
    full = vlm.context_window - 256 - 70
    tight = await ctx.for_turn("What do you see?", frames, history_tokens=full)
    m = tight.metrics
    assert m.frames_sent >= 1 and m.dropped_oldest >= 1 and m.image_tokens <= 70
    assert m.decisions and m.available_tokens == 70
    prepared = vlm.prepare(tight.apply([ChatMessage("user", "What do you see?")]))
    assert prepared.image_tokens == sum(img.tokens or 0 for img in tight.images)


def test_uncosted_images_are_fitted_by_the_same_rule(model_dirs):
    vlm = _vlm(model_dirs, "smolvlm")
    raw = ImagePart(encode_png(_pixels(1500, 900)))  # no tokens: did not come via the contract
    prepared = vlm.prepare([ChatMessage("user", "hi", images=(raw,))])
    fitted = vlm.cost.fit(1500, 900, vlm.max_side_px)
    assert prepared.image_tokens == vlm.cost.cost(*fitted).tokens
