"""The simulated user against a scripted fake server: what it measures and how it barges in.

Tolerances are wide: these check that the measurement is right, not that anything is fast.
"""

from __future__ import annotations

from bench_fakes import FakeRealtime, cue, script, tone

from cadence.bench import links as ln
from cadence.bench.user import SimulatedUser


async def test_question_v2v_is_measured_from_the_scripted_end_of_speech() -> None:
    fake = FakeRealtime(reply_delay_s=0.1)
    async with fake:
        user = SimulatedUser(fake, script(cue()), [tone(0.4)])
        [turn] = await user.run()
    # The fake answers 200 ms (hangover) + 100 ms after the last loud frame.
    assert turn.answered and turn.v2v_ms is not None
    assert 250 <= turn.v2v_ms <= 700, turn.v2v_ms
    assert turn.correct is True and turn.reply == "It is Paris."
    assert turn.heard == "hi" and turn.wer == 0.0
    assert turn.server == {"v2v": 1}
    assert not fake.truncates  # nothing was playing while the user spoke


async def test_barge_in_pauses_playback_and_reports_what_was_played() -> None:
    fake = FakeRealtime(reply_delay_s=0.05, reply_s=3.0)
    lines = script(
        cue(),
        cue("barge_in", "during_reply", delay_s=0.4),
        scenario="barge-in",
    )
    async with fake:
        user = SimulatedUser(fake, lines, [tone(0.4), tone(0.4)])
        first, second = await user.run()
    assert first.status == "cancelled"
    assert second.agent_was_speaking is True
    # Playback stops when speech_started arrives: one frame after speech starts here.
    assert second.barge_in_stop_ms is not None and second.barge_in_stop_ms < 300
    [(key, item, played_ms)] = fake.truncates
    assert (key, item) == ("resp_1", "item_1")
    assert 300 <= played_ms <= 1200, played_ms
    assert second.answered and second.v2v_ms is not None


async def test_backchannel_without_a_cancel_counts_as_continued() -> None:
    fake = FakeRealtime(reply_delay_s=0.05, reply_s=3.0, deaf_after_reply=True)
    lines = script(cue(), cue("backchannel", "during_reply", 0.3), scenario="backchannel")
    async with fake:
        _, back = await SimulatedUser(fake, lines, [tone(0.4), tone(0.2)]).run()
    assert back.kind == "backchannel" and back.continued is True
    assert back.agent_was_speaking is True and back.barge_in_stop_ms is None


async def test_a_dead_connection_still_gives_one_record_per_cue() -> None:
    class HangsUp(FakeRealtime):
        async def __aenter__(self) -> HangsUp:
            self._queue.put_nowait(ln.ServerError(0.0, "the server closed the connection"))
            self._queue.put_nowait(None)
            return self

    lines = script(cue(), cue("barge_in", "during_reply"), scenario="barge-in")
    async with HangsUp() as fake:
        turns = await SimulatedUser(fake, lines, [tone(0.3), tone(0.3)]).run()
    assert [t.cue for t in turns] == [0, 1]
    assert not any(t.answered for t in turns)
    assert "the server closed the connection" in turns[0].errors


async def test_visual_scripts_show_the_camera_picture() -> None:
    from dataclasses import replace

    fake = FakeRealtime()
    async with fake:
        await SimulatedUser(fake, replace(script(cue()), sign="EXIT"), [tone(0.3)]).run()
    assert fake.pictures >= 2  # every 0.5 s from the start


async def test_no_reply_is_recorded_as_unanswered(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import cadence.bench.user as user_mod

    monkeypatch.setattr(user_mod, "REPLY_TIMEOUT_S", 0.5)

    class Silent(FakeRealtime):
        async def _reply(self) -> None:
            return None

    async with Silent() as fake:
        [turn] = await SimulatedUser(fake, script(cue()), [tone(0.3)]).run()
    assert not turn.answered and turn.v2v_ms is None and turn.correct is False
