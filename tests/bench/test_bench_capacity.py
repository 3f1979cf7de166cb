"""The capacity ramp and its knee (no models: the logic on made-up steps)."""

from __future__ import annotations

from cadence.bench.capacity import Step, format_steps, knee, ramp
from cadence.bench.records import TurnRecord
from cadence.bench.stats import Dist


def step(sessions: int, p95: float | None, answered: float = 1.0) -> Step:
    return Step(sessions, 10, answered, Dist(10, p95, p95, p95, p95))


def test_ramp_doubles_up_to_the_maximum() -> None:
    assert ramp(1) == [1]
    assert ramp(8) == [1, 2, 4, 8]
    assert ramp(6) == [1, 2, 4, 6]


def test_knee_is_the_last_step_before_the_budget_breaks() -> None:
    steps = [step(1, 400), step(2, 550), step(4, 900), step(8, 1200)]
    assert knee(steps, 600) == 2
    assert knee(steps, 1000) == 4
    lucky = [step(1, 400), step(2, 700), step(4, 500)]
    assert knee(lucky, 600) == 1  # a lucky step after a breach does not move the knee
    assert knee([step(1, 700)], 600) is None


def test_unanswered_turns_or_no_data_break_the_ramp() -> None:
    assert knee([step(1, 300), step(2, 300, answered=0.9)], 600) == 1
    assert knee([step(1, None)], 600) is None


def test_the_table_names_both_knees() -> None:
    text = format_steps([step(1, 400), step(2, 800)])
    assert "knee at v2v p95 ≤ 600 ms: 1 session(s)" in text
    assert "knee at v2v p95 ≤ 1000 ms: 2 session(s)" in text


def test_turns_answered_first_by_a_holding_phrase_are_counted() -> None:
    record = TurnRecord("single", 0, 0, 0, "question", "piper", 1.0, 99.0, "Hi?")
    assert not record.held
    record.server = {"v2v": 1510.0, "degraded": ["v2v:quick_acknowledgement"]}
    assert record.held
    table = format_steps([Step(4, 12, 1.0, Dist(12, 900, 900, 1600, 1600), held=2)])
    assert table.splitlines()[0].split()[-1] == "held"
    assert table.splitlines()[1].split()[-1] == "2"
