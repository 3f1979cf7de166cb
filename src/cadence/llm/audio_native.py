"""Audio-native LLM backends: Qwen2-Audio and Qwen2.5-Omni's thinker hear the user's audio.

Streams text deltas like every `LLMBackend`; audio tokens are planned and asserted per call.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from cadence.errors import ConfigError, InputError, ModelError, ModelNotInstalled, StageTimeout
from cadence.llm.audio_processor import AudioChatProcessor, AudioInputs, Family
from cadence.llm.audio_tokens import AudioPlan, Policy, plan_audio, samples_at
from cadence.llm.base import ChatMessage, GenerationOptions

log = logging.getLogger(__name__)

_FAMILIES: dict[str, Family] = {
    "qwen2_audio": "qwen2_audio",
    "qwen2_5_omni": "qwen2_5_omni",  # the full Omni checkpoint: only its thinker is loaded
    "qwen2_5_omni_thinker": "qwen2_5_omni",
}
EARLIER_AUDIO = "[earlier spoken turn, audio omitted]"


@dataclass(frozen=True)
class AudioCallInfo:
    """What one call sent: kept on the backend (`last_call`) for metrics and traces."""

    plans: tuple[AudioPlan, ...]  # one per audio part sent, in prompt order
    audio_tokens: int
    prompt_tokens: int
    assembled_processor: bool
    dropped_audio_parts: int  # older audio that went as text (or was omitted) instead


def _import_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise ModelNotInstalled(
            "audio-native models need torch and transformers; install cadence[gpu]"
        ) from None
    return torch


def _load_model(model: str, device: str, dtype: str) -> tuple[Any, Family]:
    """The generation model for `model` (a path or hub id) and its family."""
    torch = _import_torch()
    import transformers
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model)
    family = _FAMILIES.get(config.model_type)
    if family is None:
        raise ConfigError(
            f"{model} is a {config.model_type!r} model; audio-native backends take "
            f"{sorted(_FAMILIES)}"
        )
    kwargs: dict[str, Any] = {"dtype": dtype if dtype == "auto" else getattr(torch, dtype)}
    net: Any
    if config.model_type == "qwen2_audio":
        net = transformers.Qwen2AudioForConditionalGeneration.from_pretrained(model, **kwargs)
    elif config.model_type == "qwen2_5_omni":
        # Text out only: load the thinker's weights out of the full checkpoint; the talker and
        # token2wav (speech out, several GB) are never built or read.
        net = transformers.Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(
            model, config=config.thinker_config, key_mapping={r"^thinker\.": ""}, **kwargs
        )
    else:
        thinker = transformers.Qwen2_5OmniThinkerForConditionalGeneration
        net = thinker.from_pretrained(model, **kwargs)
    return net.to(device).eval(), family


class TransformersAudioLLM:
    """An `LLMBackend` over a transformers audio-language model.

    One generation runs at a time per loaded model (a lock, first come first served);
    cancelling a waiting or running stream stops it at the next token. Only the newest
    `keep_audio_turns` user audio parts go to the model; older turns go as their text.
    """

    def __init__(
        self,
        model: Any,
        processor: AudioChatProcessor,
        *,
        name: str = "audio-llm",
        max_audio_tokens: int = 1_500,
        audio_policy: Policy = "chunk",
        keep_audio_turns: int = 1,
        token_timeout_s: float = 60.0,
    ) -> None:
        if keep_audio_turns < 1:
            raise ConfigError("keep_audio_turns must be >= 1")
        self.model = model
        self.processor = processor
        self.name = name
        self.max_audio_tokens = max_audio_tokens
        self.audio_policy: Policy = audio_policy
        self.keep_audio_turns = keep_audio_turns
        self.token_timeout_s = token_timeout_s
        text_config = getattr(model.config, "text_config", model.config)
        self.context_window = int(getattr(text_config, "max_position_embeddings", 8192))
        self.last_call: AudioCallInfo | None = None
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls, model: str, *, device: str = "cpu", dtype: str = "auto", **options: Any
    ) -> TransformersAudioLLM:
        """Load weights, tokenizer and processor from a directory or hub id."""
        net, family = _load_model(model, device, dtype)
        processor = AudioChatProcessor.load(model, family)
        return cls(net, processor, name=f"{family}:{model}", **options)

    # ---- prompt -------------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        return len(self.processor.tokenizer.encode(text, add_special_tokens=False))

    def _conversation(
        self, messages: Sequence[ChatMessage]
    ) -> tuple[list[dict[str, Any]], list[AudioPlan], int]:
        audio_msgs = [i for i, m in enumerate(messages) if m.audio]
        live = set(audio_msgs[-self.keep_audio_turns :])
        conversation: list[dict[str, Any]] = []
        plans: list[AudioPlan] = []
        dropped = 0
        for i, msg in enumerate(messages):
            if msg.images:
                raise InputError(
                    f"{self.name} takes audio and text; send images to the vision backend"
                )
            # the Qwen templates know no tool role: tool output goes in as a user turn's data
            role = "user" if msg.role == "tool" else msg.role
            if not msg.audio or i not in live:
                dropped += len(msg.audio) if msg.audio else 0
                text = msg.content or (EARLIER_AUDIO if msg.audio else "")
                conversation.append({"role": role, "content": text})
                continue
            parts: list[dict[str, Any]] = []
            for part in msg.audio:
                samples = samples_at(part, self.processor.spec.sample_rate)
                plan = plan_audio(
                    samples, self.processor.spec, max_tokens=self.max_audio_tokens,
                    policy=self.audio_policy,
                )
                if plan.decision in ("trimmed", "chunked", "padded"):
                    log.info("%s: audio %s", self.name, plan.note)
                plans.append(plan)
                parts += [{"type": "audio", "audio": f"clip-{len(plans)}"} for _ in plan.clips]
            if msg.content:
                parts.append({"type": "text", "text": msg.content})
            conversation.append({"role": role, "content": parts})
        return conversation, plans, dropped

    def prepare(self, messages: Sequence[ChatMessage]) -> tuple[AudioInputs, AudioCallInfo]:
        """Render, plan and featurise `messages` (blocking: run it off the event loop)."""
        conversation, plans, dropped = self._conversation(messages)
        prompt = self.processor.render(conversation)
        clips = [c for p in plans for c in p.clips]
        predicted = [t for p in plans for t in p.tokens]
        inputs = self.processor(prompt, clips, predicted)
        info = AudioCallInfo(
            tuple(plans), inputs.audio_tokens, inputs.prompt_tokens, inputs.assembled, dropped
        )
        if inputs.prompt_tokens >= self.context_window:
            raise InputError(
                f"the prompt is {inputs.prompt_tokens} tokens, over the {self.context_window}-"
                "token context; trim the history or lower max_audio_tokens"
            )
        return inputs, info

    # ---- generation ---------------------------------------------------------------------

    async def warm(self, system_prompt: str) -> None:
        """Run one token through the model so the first real turn pays no first-call costs."""
        messages = [ChatMessage("system", system_prompt), ChatMessage("user", "Hi")]
        async for _ in self.stream(messages, GenerationOptions(max_tokens=1, temperature=0.0)):
            pass

    def stream(
        self, messages: Sequence[ChatMessage], options: GenerationOptions | None = None
    ) -> AsyncIterator[str]:
        return self._stream(list(messages), options or GenerationOptions())

    async def _stream(
        self, messages: list[ChatMessage], opts: GenerationOptions
    ) -> AsyncIterator[str]:
        inputs, info = await asyncio.to_thread(self.prepare, messages)
        self.last_call = info
        torch = _import_torch()
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        stop = threading.Event()

        class _StopOnEvent(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool)

        streamer = TextIteratorStreamer(
            self.processor.tokenizer,
            skip_prompt=True,
            skip_special_tokens=True,
            timeout=self.token_timeout_s,
        )
        errors: list[BaseException] = []
        sampling = opts.temperature > 0
        gen_kwargs: dict[str, Any] = {
            **{k: v.to(self.model.device) for k, v in inputs.tensors.items()},
            "streamer": streamer,
            "stopping_criteria": StoppingCriteriaList([_StopOnEvent()]),
            "max_new_tokens": opts.max_tokens,
            "do_sample": sampling,
        }
        if sampling:
            gen_kwargs["temperature"] = opts.temperature

        def run() -> None:
            finished = False
            try:
                with self._lock:
                    if not stop.is_set():
                        with torch.inference_mode():
                            self.model.generate(**gen_kwargs)
                        finished = True  # generate() ends the streamer itself
            except BaseException as exc:  # surfaced to the reader below, never lost
                errors.append(exc)
            finally:
                if not finished:
                    streamer.end()  # wake the reader: it would otherwise wait out its timeout

        worker = threading.Thread(target=run, name=f"{self.name}-generate", daemon=True)
        worker.start()
        held = ""
        longest_stop = max((len(s) for s in opts.stop), default=0)
        try:
            chunks = iter(streamer)
            while True:
                try:
                    delta = await asyncio.to_thread(next, chunks, None)
                except queue.Empty:
                    raise StageTimeout(
                        f"{self.name} produced no token for {self.token_timeout_s:.0f} s"
                    ) from None
                if delta is None:
                    break
                held += delta
                hit = min((held.find(s) for s in opts.stop if s in held), default=-1)
                if hit >= 0:
                    if held[:hit]:
                        yield held[:hit]
                    held = ""
                    break
                # hold back a possible stop string's prefix until it is decided
                cut = len(held) - (longest_stop - 1) if longest_stop else len(held)
                if cut > 0:
                    yield held[:cut]
                    held = held[cut:]
            if errors:
                raise ModelError(f"{self.name} failed while generating: {errors[0]}") from errors[0]
            if held:
                yield held
        finally:
            stop.set()
            # The model is free for the next caller only when generate() has returned.
            await asyncio.to_thread(worker.join, self.token_timeout_s)
