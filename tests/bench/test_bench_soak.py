"""`cadence bench soak`: its turn accounting, and a one-minute soak of a real `cadence serve`.

The one-minute soak is the issue's "a 1-minute version runs in `make test`": two spoken
sessions against a self-started server (real models, 127.0.0.1), every question answered,
no error event, no session lost, no fd left open, and the server's event-loop lag reported.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from cadence.bench.server_process import LagSample, StartedServer, parse_loop_lag, started_server
from cadence.bench.soak import ANSWERED, PENDING, SoakReport, TurnRecord, run_soak

SOAK_MINUTES = 1.0
FD_SLACK = 2


def _turn() -> TurnRecord:
    return TurnRecord(session=1, number=4, started_s=12.0, question="Say hello.", over_reply=True)


def _done(rid: str, status: str, transcript: str = "", reason: str | None = None) -> dict[str, Any]:
    content = [{"type": "output_audio", "transcript": transcript}] if transcript else []
    response: dict[str, Any] = {"id": rid, "status": status, "output": [{"content": content}]}
    if reason:
        response["status_details"] = {"type": status, "reason": reason}
    return {"type": "response.done", "response": response}


def test_a_turn_is_answered_only_by_a_completed_worded_reply_to_it() -> None:
    turn = _turn()
    turn.note({"type": "input_audio_buffer.speech_started"}, 12.5)
    turn.note(_done("resp_old", "completed", "An earlier turn's answer."), 12.6)
    assert turn.outcome == PENDING  # not a response created while this turn was current
    turn.note({"type": "response.created", "response": {"id": "resp_1"}}, 13.0)
    turn.note(_done("resp_1", "cancelled", "Hel", reason="barge_in"), 13.2)
    assert turn.outcome == PENDING and turn.cancelled == 1  # the user went on: wait for more
    turn.note({"type": "response.created", "response": {"id": "resp_2"}}, 14.0)
    for _ in range(3):
        turn.note({"type": "response.output_audio.delta", "delta": "AAAA"}, 14.1)
    turn.note(_done("resp_2", "completed", "Hello!"), 14.3)
    assert turn.outcome == ANSWERED and turn.reply == "Hello!"
    assert turn.reply_audio_s == pytest.approx(3 * 3 / 48_000)
    kinds = [e[0] for e in turn.events]
    assert kinds.count("response.output_audio.delta") == 1  # a run is one entry, counted
    assert "an earlier turn's" in turn.describe() and "barge_in" in turn.describe()


def test_empty_and_failed_replies_and_silence_are_not_answers() -> None:
    empty = _turn()
    empty.note({"type": "response.created", "response": {"id": "r"}}, 1.0)
    empty.note(_done("r", "completed", ""), 2.0)
    assert empty.outcome == "empty reply"
    failed = _turn()
    failed.note({"type": "response.created", "response": {"id": "r"}}, 1.0)
    failed.note(_done("r", "failed"), 2.0)
    assert failed.outcome == "response failed"
    dropped = _turn()
    dropped.note({"type": "input_audio_buffer.speech_started"}, 1.0)
    dropped.note({"type": "input_audio_buffer.speech_stopped"}, 2.0)
    dropped.give_up(cut_at_end=False)
    assert dropped.outcome == "no response"
    unheard = _turn()
    unheard.give_up(cut_at_end=True)
    assert unheard.outcome == "no speech_started (cut at the end of the soak)"

    report = SoakReport(turns_list=[empty, failed, dropped, unheard, _turn()])
    assert report.turns == 4 and report.answered == 0  # the pending one is not counted
    text = report.render()
    assert text.count("UNANSWERED session 1 turn 4") == 4
    assert "said 'Say hello.'" in text and "over the previous reply" in text


def test_loop_lag_is_read_from_metrics_and_summarised_within_the_run() -> None:
    page = (
        "# TYPE cadence_event_loop_lag_ms gauge\n"
        'cadence_event_loop_lag_ms{quantile="0.5"} 0.6\n'
        'cadence_event_loop_lag_ms{quantile="0.99"} 2.5\n'
        'cadence_event_loop_lag_ms{quantile="1"} 9\n'
    )
    assert parse_loop_lag(page, 3.0) == LagSample(3.0, 0.6, 2.5, 9.0)
    assert parse_loop_lag("cadence_ready 1\n") is None
    report = SoakReport(lag=[LagSample(0.0, 1.0, 40.0, 400.0), LagSample(65.0, 0.7, 3.0, 8.0)])
    assert report.loop_lag() == {"p50": 0.7, "p99": 3.0, "max": 8.0, "within_run": 1.0}
    assert "max 8.0 ms (within the run)" in report.render()


def test_stall_warnings_come_with_their_stacks_from_the_server_log(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    log.write_text(
        "models ready\n"
        "event loop blocked for 263 ms so far; the loop thread is at:\n"
        '  File "echo.py", line 236, in likelihood\n'
        "    self._update_delay(b)\n"
        "draining: 0 live session(s)\n"
    )
    server = StartedServer(None, "", log)  # type: ignore[arg-type,unused-ignore]
    assert server.stalls() == [
        [
            "event loop blocked for 263 ms so far; the loop thread is at:",
            '  File "echo.py", line 236, in likelihood',
            "    self._update_delay(b)",
        ]
    ]
    assert server.problems() == []


@pytest.mark.models
@pytest.mark.timeout(240)
async def test_one_minute_soak_answers_every_turn_and_leaks_nothing() -> None:
    began = time.monotonic()
    async with started_server() as server:
        report = await run_soak(server.url, server.pid, sessions=2, minutes=SOAK_MINUTES)
        problems, stalls = server.problems(), server.stalls()
    print(f"\n{report.render()}\n(whole test {time.monotonic() - began:.1f} s)")
    for stall in stalls:  # printed, not asserted: a shared 2-core machine stalls at times
        print("\n".join(stall))
    assert report.sessions_lost == 0, report.lost
    assert report.turns >= 6, report.render()  # two sessions, a question every ~5 s
    assert report.unanswered == [], "\n".join(t.describe() for t in report.unanswered)
    assert all(t.outcome != PENDING for t in report.turns_list)
    assert report.errors == 0
    assert problems == []
    first, last = report.samples[0], report.samples[-1]
    assert last.fds <= first.fds + FD_SLACK, report.render()
    lag = report.loop_lag()
    assert lag is not None and lag["within_run"], report.lag
    assert "server event-loop lag: p50" in report.render()
