"""Tiny random-weight vision-language models of each supported family, built from a config.

No hub access here: tests and `cadence bench` exercise the real load-by-path code on these.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cadence.errors import ConfigError

FAMILIES = ("idefics3", "smolvlm", "qwen2_vl", "qwen2_5_vl", "llava_onevision", "mllama")

# Chat templates shaped like each family's real one (image placeholders, role markers).
_CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}IMAGE{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_TEMPLATES = {
    "qwen2_vl": _CHATML.replace("IMAGE", "<|vision_start|><|image_pad|><|vision_end|>"),
    "llava_onevision": _CHATML.replace("IMAGE", "<image>"),
    "idefics3": (
        "<|im_start|>{% for m in messages %}{{ m['role'] | capitalize }}"
        "{% if m['content'][0]['type'] == 'image' %}:{% else %}: {% endif %}"
        "{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}"
        "{% else %}<image>{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
        "{% if add_generation_prompt %}Assistant:{% endif %}"
    ),
    "mllama": (
        "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}"
        "<|end_header_id|>\n\n{% for c in m['content'] %}{% if c['type'] == 'image' %}<|image|>"
        "{% else %}{{ c['text'] }}{% endif %}{% endfor %}<|eot_id|>{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n"
        "{% endif %}"
    ),
}
_TEMPLATES["qwen2_5_vl"] = _TEMPLATES["qwen2_vl"]
_TEMPLATES["smolvlm"] = _TEMPLATES["idefics3"]

_ROW_COL = [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
_SPECIALS = {
    "qwen2_vl": [
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<|vision_start|>",
        "<|vision_end|>",
        "<|image_pad|>",
        "<|video_pad|>",
    ],
    "llava_onevision": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"],
    "idefics3": [
        "<|endoftext|>",
        "<|im_start|>",
        "<end_of_utterance>",
        "<fake_token_around_image>",
        "<image>",
        "<global-img>",
        "<video>",
        *_ROW_COL,
    ],
    "mllama": [
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|eot_id|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|image|>",
        "<|python_tag|>",
        "<|finetune_right_pad_id|>",
    ],
}
_SPECIALS["qwen2_5_vl"] = _SPECIALS["qwen2_vl"]
_SPECIALS["smolvlm"] = _SPECIALS["idefics3"]
_EOS = {
    "qwen2_vl": "<|im_end|>",
    "llava_onevision": "<|im_end|>",
    "idefics3": "<end_of_utterance>",
    "mllama": "<|eot_id|>",
}
_EOS["qwen2_5_vl"] = _EOS["qwen2_vl"]
_EOS["smolvlm"] = _EOS["idefics3"]
_CORPUS = (
    "hello world what does the sign say open 24 hours a cat on a red mat the screen shows "
    "a window with text the weather is sunny today please answer briefly "
)


def _tokenizer(family: str, vocab_size: int) -> Any:
    """A byte-level BPE trained here in ~10 ms, wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = _SPECIALS[family]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator([_CORPUS] * 20, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe)
    tok.eos_token = _EOS[family]
    tok.pad_token = specials[1] if family == "mllama" else specials[0]
    if family == "mllama":
        tok.bos_token = "<|begin_of_text|>"
    tok.chat_template = _TEMPLATES[family]
    return tok


def _text(vocab: int, real: bool, **extra: Any) -> dict[str, Any]:
    if real:  # ~0.5B-class decoder: enough to make latency figures meaningful on a GPU
        base = dict(
            hidden_size=896,
            intermediate_size=4864,
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
        )
    else:
        base = dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    return {"vocab_size": vocab, "max_position_embeddings": 4096, **base, **extra}


def _build(family: str, tok: Any, real: bool) -> tuple[Any, Any, dict[str, Any]]:
    """(model config, image processor, processor kwargs) with matching geometry."""
    import transformers as tf

    ids = {t: tok.convert_tokens_to_ids(t) for t in _SPECIALS[family]}
    eos, pad = tok.eos_token_id, tok.pad_token_id
    vocab = len(tok)
    if family in ("qwen2_vl", "qwen2_5_vl"):
        heads = 14 if real else 4
        hidden = 896 if real else 64
        half = hidden // heads // 2
        section = [half - 2 * (half // 3), half // 3, half // 3]
        text = _text(
            vocab,
            real,
            eos_token_id=eos,
            pad_token_id=pad,
            bos_token_id=None,
            rope_parameters={
                "rope_type": "default",
                "mrope_section": section,
                "rope_theta": 1_000_000.0,
            },
        )
        vision: dict[str, Any] = dict(
            depth=32 if real else 2,
            hidden_size=hidden,
            num_heads=16 if real else 2,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
        )
        if family == "qwen2_vl":
            vision.update(embed_dim=1280 if real else 32)
            cfg_cls: Any = tf.Qwen2VLConfig
        else:
            vision.update(
                hidden_size=1280 if real else 32,
                out_hidden_size=hidden,
                intermediate_size=3420 if real else 64,
                window_size=112,
                fullatt_block_indexes=[7, 15, 23, 31] if real else [1],
            )
            cfg_cls = tf.Qwen2_5_VLConfig
        config = cfg_cls(
            text_config=text,
            vision_config=vision,
            image_token_id=ids["<|image_pad|>"],
            video_token_id=ids["<|video_pad|>"],
            vision_start_token_id=ids["<|vision_start|>"],
            vision_end_token_id=ids["<|vision_end|>"],
        )
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
            Qwen2VLImageProcessorPil,
        )

        max_px = 28 * 28 * (1280 if real else 64)
        return config, Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=max_px), {}
    if family in ("idefics3", "smolvlm"):
        side, patch = (512, 16) if real else (64, 16)
        vision = dict(
            hidden_size=768 if real else 32,
            intermediate_size=3072 if real else 64,
            num_hidden_layers=12 if real else 2,
            num_attention_heads=12 if real else 2,
            image_size=side,
            patch_size=patch,
        )
        text = _text(vocab, real, eos_token_id=eos, pad_token_id=pad, bos_token_id=None)
        cfg_cls = tf.Idefics3Config if family == "idefics3" else tf.SmolVLMConfig
        config = cfg_cls(
            text_config=text,
            vision_config=vision,
            scale_factor=4 if real else 2,
            image_token_id=ids["<image>"],
        )
        seq = (side // patch) ** 2 // (config.scale_factor**2)
        from transformers.models.idefics3.image_processing_pil_idefics3 import (
            Idefics3ImageProcessorPil,
        )

        proc: Any = Idefics3ImageProcessorPil(
            size={"longest_edge": 4 * side}, max_image_size={"longest_edge": side}
        )
        if family == "smolvlm":
            from transformers.models.smolvlm.image_processing_pil_smolvlm import (
                SmolVLMImageProcessorPil,
            )

            proc = SmolVLMImageProcessorPil(
                size={"longest_edge": 4 * side}, max_image_size={"longest_edge": side}
            )
        return config, proc, {"image_seq_len": seq}
    if family == "llava_onevision":
        side, patch = (384, 14) if real else (28, 14)
        pins = [[side * r, side * c] for r in range(1, 4) for c in range(1, 4)]
        vision = dict(
            model_type="siglip_vision_model",
            hidden_size=1152 if real else 32,
            intermediate_size=4304 if real else 64,
            num_hidden_layers=26 if real else 2,
            num_attention_heads=16 if real else 2,
            image_size=side,
            patch_size=patch,
        )
        text = _text(
            vocab, real, eos_token_id=eos, pad_token_id=pad, bos_token_id=None, model_type="qwen2"
        )
        config = tf.LlavaOnevisionConfig(
            text_config=text,
            vision_config=vision,
            image_token_index=ids["<image>"],
            video_token_index=ids["<video>"],
            image_grid_pinpoints=pins,
            vision_feature_select_strategy="full",
            vision_aspect_ratio="anyres_max_9",
        )
        from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
            LlavaOnevisionImageProcessorPil,
        )

        proc = LlavaOnevisionImageProcessorPil(
            size={"height": side, "width": side}, image_grid_pinpoints=pins
        )
        kw = {
            "num_image_tokens": (side // patch) ** 2,
            "vision_feature_select_strategy": "full",
            "vision_aspect_ratio": "anyres_max_9",
        }
        return config, proc, kw
    if family == "mllama":
        side = 448 if real else 28
        vhidden = 1280 if real else 32
        layers = [3, 7, 15, 23, 30] if real else [0]
        vision = dict(
            hidden_size=vhidden,
            intermediate_size=5120 if real else 64,
            num_hidden_layers=32 if real else 2,
            num_global_layers=8 if real else 1,
            attention_heads=16 if real else 2,
            image_size=side,
            patch_size=14,
            max_num_tiles=4,
            intermediate_layers_indices=layers,
            vision_output_dim=vhidden * (len(layers) + 1),
        )
        text = _text(
            vocab,
            real,
            cross_attention_layers=[3, 8, 13, 18] if real else [1],
            eos_token_id=eos,
            pad_token_id=pad,
            bos_token_id=tok.bos_token_id,
        )
        text.pop("num_key_value_heads")
        text["num_key_value_heads"] = 2
        config = tf.MllamaConfig(
            text_config=text, vision_config=vision, image_token_index=ids["<|image|>"]
        )
        from transformers.models.mllama.image_processing_pil_mllama import MllamaImageProcessorPil

        return config, MllamaImageProcessorPil(size={"height": side, "width": side}), {}
    raise ConfigError(f"unknown VLM family {family!r}; known: {', '.join(FAMILIES)}")


def build_tiny_vlm(
    family: str,
    directory: str | Path,
    *,
    seed: int = 0,
    real_size: bool = False,
    vocab_size: int = 400,
) -> Path:
    """Write a random-weight `family` model + processor files to `directory`; return it.

    `real_size` keeps the tiny tokenizer but uses real-size layer shapes (for GPU latency).
    The generation config suppresses special tokens so every step yields visible text and
    generation always runs to `max_new_tokens` (tests of streaming and cancellation rely on it).
    """
    import torch
    from transformers import AutoModelForImageTextToText

    from cadence.llm.vlm_processor import assemble_processor

    if family not in FAMILIES:
        raise ConfigError(f"unknown VLM family {family!r}; known: {', '.join(FAMILIES)}")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tok = _tokenizer(family, vocab_size)
    config, image_processor, proc_kwargs = _build(family, tok, real_size)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config)
    special = sorted(
        set(tok.all_special_ids) | {tok.convert_tokens_to_ids(t) for t in _SPECIALS[family]}
    )
    model.generation_config.suppress_tokens = special
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out)
    processor = assemble_processor(
        family_processor_class(family), image_processor, tok, _TEMPLATES[family], proc_kwargs
    )
    processor.save_pretrained(out)
    return out


def family_processor_class(family: str) -> str:
    return {
        "idefics3": "Idefics3Processor",
        "smolvlm": "SmolVLMProcessor",
        "qwen2_vl": "Qwen2VLProcessor",
        "qwen2_5_vl": "Qwen2_5_VLProcessor",
        "llava_onevision": "LlavaOnevisionProcessor",
        "mllama": "MllamaProcessor",
    }[family]
