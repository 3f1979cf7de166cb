"""Tiny random-weight Qwen2-Audio and Qwen2.5-Omni thinkers through the audio-native backend.

Built from configs in the test (no download): tokens as predicted, streaming, cancellation,
error propagation, save/load round trip through the loader, and the assembled processor.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from cadence.errors import InputError, ModelError  # noqa: E402
from cadence.llm.audio_native import TransformersAudioLLM  # noqa: E402
from cadence.llm.audio_processor import AudioChatProcessor  # noqa: E402
from cadence.llm.audio_tokens import qwen_audio_tokens  # noqa: E402
from cadence.llm.base import AudioPart, ChatMessage, GenerationOptions, LLMBackend  # noqa: E402

SPECIAL = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>",
    "<|IMAGE|>", "<|VIDEO|>", "<|vision_bos|>", "<|vision_eos|>",
]
CORPUS = [
    "Hello, how are you today? I am fine, thank you.",
    "The weather is nice. Do you like coffee or tea?",
    "You are a helpful assistant. Answer in one short sentence.",
    "system user assistant audio hello world 0123456789",
]


def _tokenizer() -> Any:
    """A byte-level BPE trained here in ~10 ms, with the Qwen special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS * 4, trainer)
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens={
            "audio_token": "<|AUDIO|>", "audio_bos_token": "<|audio_bos|>",
            "audio_eos_token": "<|audio_eos|>", "image_token": "<|IMAGE|>",
            "video_token": "<|VIDEO|>", "vision_bos_token": "<|vision_bos|>",
            "vision_eos_token": "<|vision_eos|>",
        },
    )


def _text_config(tok: Any, model_type: str) -> dict[str, Any]:
    return {
        "model_type": model_type, "vocab_size": len(tok), "hidden_size": 64,
        "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 4096,
        "eos_token_id": tok.convert_tokens_to_ids("<|im_end|>"),
        "pad_token_id": tok.convert_tokens_to_ids("<|endoftext|>"),
    }


def _audio_config() -> dict[str, Any]:
    # max_source_positions stays 1500: the feature extractor's 3000-frame window / conv stride 2
    return {
        "d_model": 32, "encoder_layers": 2, "encoder_attention_heads": 2,
        "encoder_ffn_dim": 64, "num_mel_bins": 128, "max_source_positions": 1500,
    }


def _save_tiny(family: str, out: Path) -> Path:
    torch.manual_seed(0)
    tok = _tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL}
    extractor = transformers.WhisperFeatureExtractor(feature_size=128)
    if family == "qwen2_audio":
        config = transformers.Qwen2AudioConfig(
            audio_config=_audio_config(),
            text_config=_text_config(tok, "qwen2"),
            audio_token_index=ids["<|AUDIO|>"],
        )
        model: Any = transformers.Qwen2AudioForConditionalGeneration(config)
        processor = transformers.Qwen2AudioProcessor(feature_extractor=extractor, tokenizer=tok)
        processor.save_pretrained(out)
    else:
        text = _text_config(tok, "qwen2_5_omni_text")
        # head_dim 16 → 8 rotary pairs split over (time, height, width)
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0,
                                   "mrope_section": [2, 3, 3]}
        config = transformers.Qwen2_5OmniThinkerConfig(
            audio_config={**_audio_config(), "output_dim": 64, "n_window": 100},
            vision_config={"depth": 1, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2,
                           "out_hidden_size": 64, "fullatt_block_indexes": [0]},
            text_config=text,
            audio_token_index=ids["<|AUDIO|>"], image_token_index=ids["<|IMAGE|>"],
            video_token_index=ids["<|VIDEO|>"], audio_start_token_id=ids["<|audio_bos|>"],
            audio_end_token_id=ids["<|audio_eos|>"], vision_start_token_id=ids["<|vision_bos|>"],
        )
        model = transformers.Qwen2_5OmniThinkerForConditionalGeneration(config)
        # What a CPU-only user has: no processor_config (AutoProcessor would need torchvision).
        tok.save_pretrained(out)
        extractor.save_pretrained(out)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module", params=["qwen2_audio", "qwen2_5_omni_thinker"])
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = _save_tiny(request.param, tmp_path_factory.mktemp(request.param))
    return TransformersAudioLLM.load(str(path), token_timeout_s=30.0)


def _speech_like(seconds: float, rate: int = 16_000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    x = 0.2 * np.sin(2 * np.pi * 140 * t) + 0.02 * rng.standard_normal(len(t))
    return x.astype(np.float32)


def _part(seconds: float, rate: int = 16_000) -> AudioPart:
    return AudioPart(_speech_like(seconds, rate).astype("<f4").tobytes(), rate)


def _turn(seconds: float = 2.0, rate: int = 16_000) -> list[ChatMessage]:
    return [
        ChatMessage("system", "You are a helpful assistant."),
        ChatMessage("user", "[prosody: question intonation]", audio=(_part(seconds, rate),)),
    ]


async def _collect(backend: Any, messages: list[ChatMessage], max_tokens: int = 6) -> list[str]:
    opts = GenerationOptions(max_tokens=max_tokens, temperature=0.0)
    return [d async for d in backend.stream(messages, opts)]


def test_loader_picks_the_family_and_satisfies_the_protocol(backend: Any) -> None:
    assert isinstance(backend, LLMBackend)
    assert backend.context_window == 4096
    assert backend.count_tokens("hello world") > 0
    family = backend.processor.family
    # Without torchvision the Omni processor cannot be built: ours is assembled instead.
    assert (backend.processor.processor is None) == (family == "qwen2_5_omni")


@pytest.mark.parametrize("seconds", [0.5, 2.0, 3.0048])
def test_audio_tokens_are_known_before_the_call(backend: Any, seconds: float) -> None:
    n = int(seconds * 16_000)
    inputs, info = backend.prepare(_turn(seconds))
    assert info.audio_tokens == qwen_audio_tokens(n) == inputs.audio_tokens
    assert info.plans[0].decision == "fits"
    placeholders = inputs.tensors["input_ids"] == backend.processor.audio_token_id
    assert int(placeholders.sum()) == info.audio_tokens


def test_sample_rate_is_converted_at_the_seam(backend: Any) -> None:
    _, info = backend.prepare(_turn(2.0, rate=48_000))
    assert info.audio_tokens == qwen_audio_tokens(32_000)  # 2 s at 16 kHz
    with pytest.raises(InputError):
        backend.prepare([ChatMessage("user", "", audio=(AudioPart(b"\x00\x00\x80", 16_000),))])


def test_long_audio_is_chunked_and_the_decision_recorded(backend: Any) -> None:
    inputs, info = backend.prepare(_turn(31.0))
    plan = info.plans[0]
    assert plan.decision == "chunked" and len(plan.clips) == 2
    assert info.audio_tokens == sum(qwen_audio_tokens(len(c)) for c in plan.clips)
    assert inputs.tensors["input_features"].shape[0] == 2


def test_only_the_newest_audio_turn_is_heard(backend: Any) -> None:
    older = ChatMessage("user", "what time is it", audio=(_part(1.0),))
    _, info = backend.prepare([older, ChatMessage("assistant", "Noon."), *_turn(1.0)[1:]])
    assert info.dropped_audio_parts == 1 and len(info.plans) == 1


async def test_streaming_yields_deltas_and_matches_generate(backend: Any) -> None:
    deltas = await _collect(backend, _turn(1.0), max_tokens=8)
    assert deltas and all(isinstance(d, str) for d in deltas)
    inputs, _ = backend.prepare(_turn(1.0))
    with torch.inference_mode():
        ids = backend.model.generate(**inputs.tensors, max_new_tokens=8, do_sample=False)
    prompt_len = inputs.tensors["input_ids"].shape[1]
    expected = backend.processor.tokenizer.decode(ids[0, prompt_len:], skip_special_tokens=True)
    assert "".join(deltas) == expected


async def test_cancellation_stops_generation_promptly(backend: Any) -> None:
    calls = 0

    def slow_step(module: Any, args: Any) -> None:
        nonlocal calls
        calls += 1
        time.sleep(0.02)  # make a long generation take a while

    hook = backend.model.register_forward_pre_hook(slow_step)
    eos = backend.model.generation_config.eos_token_id
    backend.model.generation_config.eos_token_id = None  # a random model may pick EOS early
    try:
        opts = GenerationOptions(max_tokens=400, temperature=0.0)
        stream = backend.stream(_turn(1.0), opts)
        assert isinstance(await stream.__anext__(), str)
        started = time.perf_counter()
        await stream.aclose()
        closed_in = time.perf_counter() - started
        steps = calls
        await asyncio.sleep(0.2)
        assert calls == steps, "generate() kept running after aclose()"
        assert closed_in < 2.0 and steps < 100
        assert not backend._lock.locked()

        async def consume() -> None:
            async for _ in backend.stream(_turn(1.0), opts):
                pass

        calls = 0
        task = asyncio.create_task(consume())
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        steps = calls
        await asyncio.sleep(0.2)
        assert calls == steps and 0 < steps < 100 and not backend._lock.locked()
    finally:
        hook.remove()
        backend.model.generation_config.eos_token_id = eos
    assert [t.name for t in threading.enumerate() if t.name.endswith("-generate")] == []


async def test_a_failing_generate_propagates(backend: Any) -> None:
    def broken(module: Any, args: Any) -> None:
        raise RuntimeError("CUDA out of memory (simulated)")

    hook = backend.model.register_forward_pre_hook(broken)
    try:
        with pytest.raises(ModelError, match="simulated"):
            await asyncio.wait_for(_collect(backend, _turn(1.0)), timeout=20)
    finally:
        hook.remove()
    assert isinstance(await _collect(backend, _turn(1.0), max_tokens=2), list)  # usable again


async def test_warm_and_text_only_turns(backend: Any) -> None:
    await backend.warm("You are terse.")
    deltas = await _collect(backend, [ChatMessage("user", "Hello")], max_tokens=3)
    assert isinstance("".join(deltas), str)
    assert backend.last_call is not None and backend.last_call.audio_tokens == 0


def test_images_are_refused_with_a_clear_message(backend: Any) -> None:
    from cadence.llm.base import ImagePart

    with pytest.raises(InputError, match="vision backend"):
        backend.prepare([ChatMessage("user", "look", images=(ImagePart(b"png"),))])


def test_round_trip_gives_identical_ids_and_logits(
    backend: Any, tmp_path: Path
) -> None:
    backend.model.save_pretrained(tmp_path)
    backend.processor.tokenizer.save_pretrained(tmp_path)
    backend.processor.feature_extractor.save_pretrained(tmp_path)
    again = TransformersAudioLLM.load(str(tmp_path))
    a, _ = backend.prepare(_turn(1.5))
    b, _ = again.prepare(_turn(1.5))
    assert torch.equal(a.tensors["input_ids"], b.tensors["input_ids"])
    with torch.inference_mode():
        la = backend.model(**a.tensors).logits
        lb = again.model(**b.tensors).logits
    assert torch.allclose(la, lb, atol=1e-5)


def test_assembled_processor_equals_the_real_one(tmp_path: Path) -> None:
    """Qwen2-Audio's own processor works without torchvision: ours must give the same inputs."""
    path = _save_tiny("qwen2_audio", tmp_path)
    real = AudioChatProcessor.load(str(path), "qwen2_audio")
    assert real.processor is not None
    ours = AudioChatProcessor(
        family="qwen2_audio", feature_extractor=real.feature_extractor,
        tokenizer=real.tokenizer, chat_template=real.chat_template,
    )
    clips = [_speech_like(1.3), _speech_like(0.7, seed=1)]
    prompt = ours.render([{"role": "user", "content": [
        {"type": "audio", "audio": "a"}, {"type": "audio", "audio": "b"},
        {"type": "text", "text": "compare"}]}])
    predicted = [qwen_audio_tokens(len(c)) for c in clips]
    x, y = real(prompt, clips, predicted), ours(prompt, clips, predicted)
    assert not x.assembled and y.assembled
    for key in ("input_ids", "attention_mask", "input_features", "feature_attention_mask"):
        assert torch.equal(x.tensors[key], y.tensors[key]), key
    with pytest.raises(ModelError, match="accounting"):
        ours(prompt, clips, [predicted[0] + 1, predicted[1]])


def test_full_omni_checkpoint_loads_only_the_thinker(tmp_path: Path) -> None:
    thinker_dir = _save_tiny("qwen2_5_omni_thinker", tmp_path / "thinker")
    thinker = transformers.Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(thinker_dir)
    config = transformers.Qwen2_5OmniConfig(
        thinker_config=thinker.config.to_dict(), enable_audio_output=False
    )
    full = transformers.Qwen2_5OmniForConditionalGeneration(config)
    full.thinker.load_state_dict(thinker.state_dict())
    full.save_pretrained(tmp_path / "full")
    for name in ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"):
        (tmp_path / "full" / name).write_bytes((thinker_dir / name).read_bytes())
    loaded = TransformersAudioLLM.load(str(tmp_path / "full"))
    assert type(loaded.model).__name__ == "Qwen2_5OmniThinkerForConditionalGeneration"
    mine, theirs = loaded.model.state_dict(), thinker.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)  # read, not re-initialised
    _, info = loaded.prepare(_turn(1.0))
    assert info.audio_tokens == qwen_audio_tokens(16_000)
