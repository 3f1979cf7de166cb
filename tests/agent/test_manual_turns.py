"""Manual turns (Realtime `turn_detection: null`): the agent answers only when asked."""

from __future__ import annotations

import asyncio

import pytest

from cadence.agent import outputs as out
from cadence.agent.runtime import Runtime
from cadence.agent.session import Session
from cadence.audio.chunk import AudioChunk
from cadence.bench.voices import synthesize

pytestmark = pytest.mark.models


async def test_no_reply_until_commit_and_response_request(runtime: Runtime) -> None:
    seen: list[out.SessionOutput] = []
    async with Session(runtime) as session:
        session.set_turn_detection(False)

        async def read() -> None:
            async for item in session.events():
                seen.append(item)

        reader = asyncio.create_task(read())
        question = synthesize("What is the capital of France?", tail_silence_s=1.0)
        step = 320
        samples = question.samples
        for i in range(0, len(samples), step):
            session.push_audio(AudioChunk(samples[i : i + step], question.sample_rate))
            await asyncio.sleep(0.02)
        await asyncio.sleep(1.0)
        assert not [i for i in seen if isinstance(i, out.ResponseStarted)], "answered unasked"
        session.commit_audio()
        for _ in range(250):  # the final transcript of the committed audio
            if not session.asr_busy:
                break
            await asyncio.sleep(0.02)
        session.request_response()
        for _ in range(500):
            await asyncio.sleep(0.02)
            if any(isinstance(i, out.ResponseDone) for i in seen):
                break
    await reader
    done = [i for i in seen if isinstance(i, out.ResponseDone)]
    assert done and "paris" in done[0].text.lower()
