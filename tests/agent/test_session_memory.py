"""A long session keeps no trail of finished replies: per-session memory stays bounded."""

from __future__ import annotations

from tool_fakes import FakeLLM, Harness  # type: ignore[import-not-found]

from cadence.agent import outputs as out


async def test_finished_replies_are_forgotten_once_committed() -> None:
    async with Harness(FakeLLM()) as h:
        for turn in range(12):
            h.ask(f"Question number {turn}?")
            await h.finish()
        assert len(h.of(out.ResponseDone)) == 12
        assert all(d.status == "completed" for d in h.of(out.ResponseDone))
        assert len(h.session._generations) <= 1, list(h.session._generations)
        assert not h.session._records
        # the history keeps the turns (bounded separately by the context budget)
        assert len(h.of(out.AssistantTurnCommitted)) == 12
