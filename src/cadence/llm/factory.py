"""Pick the language-model backend a profile's `[llm]` table names.

`backend` is one of: "llama.cpp" (embedded, the CPU default), "audio-native" (a
transformers audio-language model that hears the audio itself), "openai" (any
OpenAI-compatible server: vLLM, SGLang, llama.cpp's server; see docs/deployment.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cadence.errors import ConfigError
from cadence.llm.base import LLMBackend

# Keys of [llm] that configure the session rather than the backend.
SESSION_KEYS = frozenset({"backend", "prosody_hints", "tool_calling"})


def make_llm(table: Mapping[str, Any]) -> LLMBackend:
    backend = table.get("backend", "llama.cpp")
    options = {k: v for k, v in table.items() if k not in SESSION_KEYS}
    try:
        if backend in ("llama.cpp", "llamacpp", "embedded"):
            from cadence.llm.llamacpp import LlamaCppBackend, LlamaCppOptions

            return LlamaCppBackend(LlamaCppOptions(**options))
        if backend == "audio-native":
            from cadence.llm.audio_native import TransformersAudioLLM

            if "model" not in options:
                raise ConfigError("[llm] backend 'audio-native' needs `model` (a path or id)")
            return TransformersAudioLLM.load(options.pop("model"), **options)
        if backend == "openai":
            # Remote engine over HTTP (cadence.llm.http_backend): url, model, api_key_env,
            # context_window, timeouts and retries are the keys of OpenAIChatOptions.
            from cadence.llm.http_backend import OpenAIChatBackend, OpenAIChatOptions

            return OpenAIChatBackend(OpenAIChatOptions(**options))
    except TypeError as exc:
        raise ConfigError(f"[llm] has an unknown or missing key: {exc}") from None
    raise ConfigError(f"[llm] backend {backend!r} is not one of: llama.cpp, audio-native, openai")
