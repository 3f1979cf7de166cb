"""Any OpenAI-compatible chat server (vLLM, SGLang, llama.cpp's server) as an `LLMBackend`.

Streams `/v1/chat/completions` over server-sent events; closing the stream closes the connection.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import httpx2

from cadence.errors import CadenceError, ConfigError, ModelError, StageTimeout
from cadence.llm.base import ChatMessage, GenerationOptions
from cadence.llm.json_grammar import bounded_schema, max_json_chars
from cadence.llm.openai_wire import build_chat_request
from cadence.net.client import Engine, EngineOptions

# Without the engine's tokenizer a token is taken as 3 UTF-8 bytes. English BPE averages
# about 4, so this over-counts by a quarter: context trimming errs on the safe side.
DEFAULT_BYTES_PER_TOKEN = 3.0
# After calibration against the engine's tokenizer, still over-count by this factor.
CALIBRATION_MARGIN = 1.1
_CALIBRATION_TEXT = (
    "The quick brown fox jumps over the lazy dog. What is the capital of France? "
    "Paris, on the Seine, has about two million people; it's 9:30 and 21 degrees."
)
_TOKENIZE_TIMEOUT_S = 2.0
JSON_MODES = ("json_schema", "json_object", "off")


@dataclass(frozen=True)
class OpenAIChatOptions(EngineOptions):
    """`[llm] backend = "openai"`: the engine's base URL and served model, and reply limits."""

    context_window: int = 4096  # the engine's max model length (vLLM --max-model-len)
    max_tokens: int = 100  # a voice agent speaks a sentence or two
    temperature: float = 0.2
    tokenize: bool = True  # calibrate count_tokens on the engine's tokenize route at warm()
    # How the engine is asked for JSON under a schema (tool calls): "json_schema" (OpenAI,
    # vLLM, SGLang, llama.cpp's llama-server) or "json_object" with a `schema` key
    # (llama-cpp-python's server); "off": the engine is never asked, tools stay unused.
    json_mode: str = "json_schema"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.json_mode not in JSON_MODES:
            raise ConfigError(f"[llm] json_mode={self.json_mode!r} is not one of {JSON_MODES}")
        if not self.model:
            raise ConfigError(
                "[llm] backend 'openai' needs `model`: the name the engine serves "
                "(vLLM --served-model-name, or the id listed by GET /v1/models)"
            )
        if self.context_window < 64:
            raise ConfigError(f"[llm] context_window={self.context_window} is too small")
        if self.max_tokens < 1:
            raise ConfigError(f"[llm] max_tokens={self.max_tokens} must be >= 1")


class OpenAIChatBackend:
    """`LLMBackend` over HTTP. Safe to share between sessions: the engine batches them.

    Connect failures are retried with backoff; once a request is sent it never is again,
    so an engine never runs the same generation twice. Closing the stream (`aclose()` or
    cancelling the consumer) closes its connection, which vLLM, SGLang and llama.cpp's
    server take as the signal to stop generating.

    `count_tokens` is an estimate from the UTF-8 length (3 bytes a token until calibrated);
    `warm()` calibrates the ratio on the engine's own tokenizer when the server has a
    tokenize route (llama-cpp-python `/extras/tokenize`; vLLM and llama.cpp `/tokenize`)
    and remembers the system prompt's exact count.
    """

    name = "openai"

    def __init__(self, options: OpenAIChatOptions) -> None:
        self.options = options
        self.context_window = options.context_window
        self.generation = GenerationOptions(
            max_tokens=options.max_tokens, temperature=options.temperature
        )
        self._engine = Engine(options, "LLM engine")
        self._chat_url = self._engine.url("chat/completions")
        self.bytes_per_token = DEFAULT_BYTES_PER_TOKEN
        self.tokenize_url: str | None = None  # the route calibration used, if any
        self._exact: dict[str, int] = {}

    def count_tokens(self, text: str) -> int:
        exact = self._exact.get(text)
        if exact is not None:
            return exact
        return math.ceil(len(text.encode("utf-8")) / self.bytes_per_token)

    async def warm(self, system_prompt: str) -> None:
        """Check the engine answers, prime its prefix cache, calibrate token counting.

        Raises `BackendUnavailable` when the engine is down, so a worker is not ready
        before its engine is.
        """
        prime = [ChatMessage("system", system_prompt), ChatMessage("user", "Hello.")]
        body = build_chat_request(
            prime,
            model=self.options.model,
            options=GenerationOptions(max_tokens=1, temperature=0.0),
            stream=False,
        )
        response = await self._engine.open("POST", self._chat_url, json=body)
        try:
            await response.aread()
        except httpx2.HTTPError as exc:
            raise self._engine.transport_error(exc, self._chat_url) from None
        finally:
            await response.aclose()
        if self.options.tokenize:
            await self._calibrate(system_prompt)

    async def stream(
        self, messages: Sequence[ChatMessage], options: GenerationOptions | None = None
    ) -> AsyncIterator[str]:
        """Yield the reply's text deltas as the engine streams them."""
        body = build_chat_request(
            messages, model=self.options.model, options=options or self.generation
        )
        async for delta in self._stream(body):
            yield delta

    async def stream_json(
        self, messages: Sequence[ChatMessage], schema: Mapping[str, Any], *, prefix: str = ""
    ) -> AsyncIterator[str]:
        """Yield the text of one JSON value matching `schema` (tool decisions and arguments),
        decoded by the engine's structured output (`response_format`, see `json_mode`).

        The value is what follows the assistant text `prefix` (e.g. `{"tool": "get_weather",
        "arguments": `); chat APIs cannot continue an assistant message, so the request
        says what the value completes. An engine that ignores `response_format` and answers
        something else is a `ModelError` at the end, which the tool path turns into a plain
        answer."""
        if self.options.json_mode == "off":
            raise ModelError("[llm] json_mode is off: this engine is not asked for JSON")
        bounded = bounded_schema(schema)
        ask = _with_prefix_hint(list(messages), prefix)
        options = GenerationOptions(max_tokens=max_json_chars(bounded) + 8, temperature=0.0)
        body = build_chat_request(ask, model=self.options.model, options=options)
        body["response_format"] = self._response_format(bounded)
        parts: list[str] = []
        async for delta in self._stream(body):
            parts.append(delta)
            yield delta
        try:
            json.loads("".join(parts))
        except ValueError:
            raise ModelError(
                f"the LLM engine at {self._chat_url} did not answer with JSON under the schema "
                f"({''.join(parts)[:80]!r}); does it support response_format "
                f"{self.options.json_mode!r}? set [llm] json_mode"
            ) from None

    def _response_format(self, schema: dict[str, Any]) -> dict[str, Any]:
        if self.options.json_mode == "json_object":
            return {"type": "json_object", "schema": schema}
        return {"type": "json_schema", "json_schema": {"name": "value", "schema": schema}}

    async def _stream(self, body: dict[str, Any]) -> AsyncIterator[str]:
        response = await self._engine.open("POST", self._chat_url, json=body)
        events = httpx2.EventSource(response).__aiter__()
        finished = False
        try:
            while (event := await self._next_event(events)) is not None:
                if event.data.strip() == "[DONE]":
                    break
                delta, reason = self._delta(event.data)
                finished = finished or reason
                if delta:
                    yield delta
            if not finished:
                # Every OpenAI-compatible engine ends a reply with a `finish_reason`; a
                # stream without one was cut short (llama-cpp-python's server does this to
                # a request when another arrives, unless started with
                # `--interrupt_requests false`). Speaking half a reply as whole would lie.
                raise ModelError(
                    f"the LLM engine at {self._chat_url} ended the reply early "
                    "(no finish_reason); is it interrupting concurrent requests?"
                )
        except httpx2.SSEError as exc:  # not an event stream, or an event over the size limit
            raise ModelError(
                f"the LLM engine at {self._chat_url} sent no valid event stream ({exc}); "
                "check that url is the engine's OpenAI-compatible API base (.../v1)"
            ) from None
        except httpx2.HTTPError as exc:
            raise self._engine.transport_error(exc, self._chat_url) from None
        finally:
            if isinstance(events, AsyncGenerator):
                await events.aclose()
            # Unread body: the connection is dropped, not pooled, so generation stops.
            await response.aclose()

    async def _next_event(
        self, events: AsyncIterator[httpx2.ServerSentEvent]
    ) -> httpx2.ServerSentEvent | None:
        """The next event, or None at the end. Each must come within read_timeout_s: an
        engine that only sends keep-alive comments (llama-cpp-python pings every 15 s,
        proxies too) keeps the socket's read timeout from firing, yet makes no progress."""
        try:
            async with asyncio.timeout(self.options.read_timeout_s):
                return await anext(events)
        except StopAsyncIteration:
            return None
        except TimeoutError:
            raise StageTimeout(
                f"the LLM engine at {self._chat_url} sent nothing for "
                f"{self.options.read_timeout_s} s (no reply event); it may be stalled or "
                "overloaded: add capacity or raise read_timeout_s"
            ) from None

    async def aclose(self) -> None:
        """Close this worker's connections to the engine."""
        await self._engine.aclose()

    def _delta(self, data: str) -> tuple[str, bool]:
        """The text of one streamed chunk, and whether it ends the reply."""
        try:
            chunk = json.loads(data)
        except ValueError:
            raise ModelError(
                f"the LLM engine at {self._chat_url} sent a malformed event: {data[:120]!r}"
            ) from None
        if not isinstance(chunk, dict):
            return "", False
        if chunk.get("error"):
            # vLLM and SGLang report a failure after the 200 as an event like this.
            error = chunk["error"]
            message = error.get("message", error) if isinstance(error, dict) else error
            raise ModelError(f"the LLM engine at {self._chat_url} failed mid-reply: {message}")
        choices = chunk.get("choices") or []  # the final usage chunk has none
        if not choices or not isinstance(choices[0], dict):
            return "", False
        # `reasoning_content` (thinking models) is never spoken: only `content` counts.
        content = (choices[0].get("delta") or {}).get("content")
        finished = bool(choices[0].get("finish_reason"))
        return (content if isinstance(content, str) else ""), finished

    async def _calibrate(self, system_prompt: str) -> None:
        sample = f"{system_prompt}\n{_CALIBRATION_TEXT}"
        for route in ("extras/tokenize", "tokenize"):
            url = self._engine.root_url(route)
            counted = await self._tokens(url, sample)
            if counted:
                self.tokenize_url = url
                ratio = len(sample.encode("utf-8")) / counted
                self.bytes_per_token = max(1.0, ratio / CALIBRATION_MARGIN)
                exact = await self._tokens(url, system_prompt) if system_prompt else 0
                if exact:
                    self._exact[system_prompt] = exact
                return

    async def _tokens(self, url: str, text: str) -> int | None:
        """Token count from a tokenize route, or None when the server has no such route."""
        # One body for all: llama-cpp-python reads `input`, vLLM `prompt`, llama.cpp
        # `content`; each ignores the others.
        body = {
            "input": text,
            "prompt": text,
            "content": text,
            "model": self.options.model,
            "add_special_tokens": False,
            "add_special": False,
        }
        try:
            response = await self._engine.open("POST", url, json=body, timeout=_TOKENIZE_TIMEOUT_S)
        except CadenceError:
            return None
        try:
            payload: Any = json.loads(await response.aread())
        except (ValueError, httpx2.HTTPError):
            return None
        finally:
            await response.aclose()
        if not isinstance(payload, dict):
            return None
        tokens = payload.get("tokens")
        if isinstance(tokens, list) and tokens:
            return len(tokens)
        count = payload.get("count")
        return count if isinstance(count, int) and count > 0 else None


def _with_prefix_hint(messages: list[ChatMessage], prefix: str) -> list[ChatMessage]:
    """Say what the value completes, in the last user message (some chat templates refuse
    two user messages in a row)."""
    if not prefix:
        return messages
    hint = f"Reply with only the JSON value that completes: {prefix}"
    if messages and messages[-1].role == "user":
        return [*messages[:-1], replace(messages[-1], content=f"{messages[-1].content}\n{hint}")]
    return [*messages, ChatMessage("user", hint)]
