"""Cancelling a reply mid-stream: nothing from the cancelled generation reaches the output."""

from __future__ import annotations

import asyncio

import pytest

from cadence.agent import outputs as out
from cadence.agent.runtime import Runtime
from cadence.agent.session import Session
from cadence.config import Profile

pytestmark = pytest.mark.models


async def test_a_cancelled_reply_emits_nothing_after_the_cancel(runtime: Runtime) -> None:
    profile = Profile(instructions="You are a helpful assistant. Answer at length, in detail.")
    session = Session(runtime, profile)
    seen: list[out.SessionOutput] = []
    cancelled_at: int | None = None
    async with session:

        async def read() -> None:
            nonlocal cancelled_at
            async for item in session.events():
                seen.append(item)
                if isinstance(item, out.ResponseAudio) and cancelled_at is None:
                    session.cancel_response()  # mid-stream: the LLM and TTS are still busy
                    # outputs already emitted but not yet read were sent before the cancel
                    cancelled_at = len(seen) + session._outputs.qsize()

        reader = asyncio.create_task(read())
        session.add_user_text("Tell me the history of the Roman empire.")
        for _ in range(300):
            await asyncio.sleep(0.02)
            if any(isinstance(i, out.ResponseDone) for i in seen):
                break
        await asyncio.sleep(1.0)  # anything still in flight would arrive now
    await reader
    assert cancelled_at is not None, "the reply never started"
    done = [i for i in seen if isinstance(i, out.ResponseDone)]
    assert done and done[0].status == "cancelled"
    generation = done[0].generation
    after = seen[cancelled_at:]
    assert not [
        i
        for i in after
        if isinstance(i, out.ResponseAudio | out.ResponseText) and i.generation == generation
    ], "audio or text of the cancelled generation came out after the cancel"
    heard = [i for i in seen if isinstance(i, out.AssistantTurnCommitted)]
    assert heard and heard[0].interrupted
    # the history holds at most the first clause, never the whole generated answer
    assert len(heard[0].text) < len(done[0].text) or not done[0].text
