"""A speculative reply that fails is the client's business only if it becomes the answer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from tool_fakes import FakeLLM, Harness  # type: ignore[import-not-found]

from cadence.agent import events as ev
from cadence.agent import outputs as out
from cadence.errors import BackendUnavailable
from cadence.llm.base import ChatMessage, GenerationOptions


@dataclass
class FailsOnPartial(FakeLLM):
    """Fails for a prompt that ends in `failing`; answers any other."""

    failing: str = "What is the weather"

    async def stream(
        self, messages: Sequence[ChatMessage], options: GenerationOptions | None = None
    ) -> AsyncIterator[str]:
        if messages[-1].content == self.failing:
            self.prompts.append(list(messages))
            raise BackendUnavailable("cannot connect to the LLM engine at http://gpu-1/v1")
        async for delta in super().stream(messages, options):
            yield delta


def say(h: Harness, text: str, *, final: bool) -> None:
    feed, now = h.session._feed, h.clock.t
    feed(ev.SpeechStarted(now, now))
    feed(ev.SpeechEnded(now + 1, now + 1))
    feed(ev.Transcript(now + 1, text, final, now + 1))


async def test_a_failed_speculation_that_is_dropped_says_nothing() -> None:
    llm = FailsOnPartial()
    async with Harness(llm, speculate=True) as h:
        say(h, "What is the weather", final=True)
        await h.advance(180.0)  # a short pause: the speculative reply starts, and fails
        assert len(llm.prompts) == 1
        say(h, "What is the weather in Paris today?", final=True)  # the user went on
        await h.finish()
        assert not h.of(out.SessionError)
        (done,) = h.of(out.ResponseDone)
        assert done.status == "completed" and "sunny" in done.text


async def test_a_failed_speculation_that_becomes_the_answer_reports_its_error() -> None:
    llm = FailsOnPartial(failing="What is the weather in Paris today?")
    async with Harness(llm, speculate=True) as h:
        say(h, "What is the weather in Paris today?", final=True)
        await h.finish()
        (error,) = h.of(out.SessionError)
        assert error.code == "backend_unavailable" and "gpu-1" in error.message
        (done,) = h.of(out.ResponseDone)
        assert done.status == "failed"
