"""Prompt + audio → model inputs for Qwen2-Audio and Qwen2.5-Omni, with or without AutoProcessor.

Without torchvision `AutoProcessor` refuses Qwen2.5-Omni; the same inputs are assembled here
from the feature extractor, the tokenizer and the chat template, token counts asserted.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from cadence.errors import InputError, ModelError
from cadence.llm.audio_tokens import AudioTokenSpec

log = logging.getLogger(__name__)

Family = Literal["qwen2_audio", "qwen2_5_omni"]

AUDIO_TOKEN = "<|AUDIO|>"
AUDIO_BOS = "<|audio_bos|>"
AUDIO_EOS = "<|audio_eos|>"

# ChatML with audio placeholders, as the Qwen checkpoints format them. Used only when a model
# directory ships no template of its own.
_CHATML_AUDIO = (
    "{% set audio_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'audio' %}{% set audio_count.value = audio_count.value + 1 %}"
    "{{ audio_prefix | replace('N', audio_count.value | string) }}"
    "<|audio_bos|><|AUDIO|><|audio_eos|>\n"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_AUDIO_PREFIX = {"qwen2_audio": "Audio N: ", "qwen2_5_omni": ""}


@dataclass
class AudioInputs:
    """Tensors for `generate()` plus the accounting that was checked on the way."""

    tensors: dict[str, Any]
    prompt_tokens: int
    audio_tokens: int  # placeholders in input_ids; equals the prediction or this was never built
    assembled: bool  # True when built here, False when through the family's own processor


def _audio_prefix_template(template: str, family: Family) -> str:
    return template.replace("audio_prefix", repr(_AUDIO_PREFIX[family]))


def default_chat_template(family: Family) -> str:
    """The ChatML-with-audio template this module falls back on for `family`."""
    return _audio_prefix_template(_CHATML_AUDIO, family)


def _template_from_dir(model: str) -> str | None:
    """A chat template saved beside the weights (`chat_template.jinja` / `.json`), if any."""
    from transformers.utils import cached_file

    for name in ("chat_template.jinja", "chat_template.json"):
        path = cached_file(
            model,
            name,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
        )
        if path:
            text = Path(path).read_text("utf-8")
            return str(json.loads(text)["chat_template"]) if name.endswith(".json") else text
    return None


class AudioChatProcessor:
    """Renders messages with the chat template and builds the model's inputs for them.

    `processor` is the family's own (e.g. `Qwen2AudioProcessor`) when `AutoProcessor` can
    build it; otherwise None and the placeholders are expanded here exactly as it would.
    """

    def __init__(
        self,
        *,
        family: Family,
        feature_extractor: Any,
        tokenizer: Any,
        chat_template: str | None,
        processor: Any = None,
    ) -> None:
        self.family = family
        self.feature_extractor = feature_extractor
        self.tokenizer = tokenizer
        self.processor = processor
        self.chat_template = chat_template or default_chat_template(family)
        self.audio_token_id = int(tokenizer.convert_tokens_to_ids(AUDIO_TOKEN))
        unknown = getattr(tokenizer, "unk_token_id", None)
        if self.audio_token_id < 0 or self.audio_token_id == unknown:
            raise ModelError(f"the tokenizer has no {AUDIO_TOKEN} token; is this an audio model?")
        self.spec = AudioTokenSpec(
            sample_rate=int(feature_extractor.sampling_rate),
            hop_length=int(feature_extractor.hop_length),
            max_frames=int(feature_extractor.nb_max_frames),
        )

    @classmethod
    def load(cls, model: str, family: Family) -> AudioChatProcessor:
        """`AutoProcessor` when it works; feature extractor + tokenizer + template otherwise."""
        from transformers import AutoFeatureExtractor, AutoProcessor, AutoTokenizer

        processor: Any = None
        try:
            processor = AutoProcessor.from_pretrained(model)
        except (ImportError, ValueError, TypeError, AttributeError, OSError, KeyError) as exc:
            # Qwen2.5-Omni's processor insists on a video processor, which needs torchvision.
            log.info("AutoProcessor refused %s (%s); assembling the audio processor", model, exc)
        if processor is not None and hasattr(processor, "feature_extractor"):
            return cls(
                family=family,
                feature_extractor=processor.feature_extractor,
                tokenizer=processor.tokenizer,
                chat_template=getattr(processor, "chat_template", None),
                processor=processor,
            )
        try:
            tokenizer = AutoTokenizer.from_pretrained(model)
            extractor = AutoFeatureExtractor.from_pretrained(model)
        except (OSError, ValueError) as exc:
            raise ModelError(
                f"cannot load the tokenizer/feature extractor of {model}: {exc}"
            ) from None
        template = _template_from_dir(model) or getattr(tokenizer, "chat_template", None)
        return cls(
            family=family, feature_extractor=extractor, tokenizer=tokenizer, chat_template=template
        )

    def render(self, conversation: Sequence[dict[str, Any]]) -> str:
        """The prompt text, one `<|AUDIO|>` placeholder per audio clip, generation prompt added."""
        text = self.tokenizer.apply_chat_template(
            list(conversation),
            chat_template=self.chat_template,
            tokenize=False,
            add_generation_prompt=True,
        )
        return str(text)

    def __call__(
        self, prompt: str, clips: Sequence[np.ndarray], predicted: Sequence[int]
    ) -> AudioInputs:
        """Tokens and features for `prompt`; asserts the placeholder counts equal `predicted`."""
        if prompt.count(AUDIO_TOKEN) != len(clips):
            raise InputError(
                f"the prompt has {prompt.count(AUDIO_TOKEN)} audio placeholders "
                f"for {len(clips)} clips"
            )
        rate = self.spec.sample_rate
        assembled = self.processor is None
        if not clips:
            tensors = dict(self.tokenizer(prompt, return_tensors="pt"))
        elif not assembled:
            out = self.processor(
                text=[prompt], audio=list(clips), sampling_rate=rate, return_tensors="pt"
            )
            tensors = dict(out)
        else:
            tensors = self._assemble(prompt, clips)
        audio_tokens = int((tensors["input_ids"] == self.audio_token_id).sum())
        if audio_tokens != sum(predicted):
            raise ModelError(
                f"audio accounting mismatch: predicted {sum(predicted)} tokens {list(predicted)}, "
                f"the processor produced {audio_tokens}; the feature extractor's hop/max frames "
                "disagree with the model family"
            )
        tensors.pop("num_audio_tokens", None)
        return AudioInputs(tensors, int(tensors["input_ids"].shape[1]), audio_tokens, assembled)

    def _assemble(self, prompt: str, clips: Sequence[np.ndarray]) -> dict[str, Any]:
        features = self.feature_extractor(
            list(clips),
            sampling_rate=self.spec.sample_rate,
            padding="max_length",  # the encoders expect the full 30 s window
            return_attention_mask=True,
            return_tensors="pt",
        )
        mask = features.pop("attention_mask")
        counts = [self.spec.tokens_for_frames(int(n)) for n in mask.sum(-1).tolist()]
        pieces = prompt.split(AUDIO_TOKEN)
        expanded = pieces[0] + "".join(
            AUDIO_TOKEN * n + rest for n, rest in zip(counts, pieces[1:], strict=True)
        )
        tokens = self.tokenizer(expanded, return_tensors="pt")
        return {
            "input_ids": tokens["input_ids"],
            "attention_mask": tokens["attention_mask"],
            "input_features": features["input_features"],
            "feature_attention_mask": mask,
        }
