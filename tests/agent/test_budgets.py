"""Stage budgets from config, degrade policies, and the per-turn latency record."""

from __future__ import annotations

import json

import pytest

from cadence.agent.budgets import (
    DEFAULT_POLICIES,
    RECORD_STAGES,
    Degrade,
    LatencyRecord,
    StageBudgets,
    policy_for,
)
from cadence.errors import ConfigError


def test_defaults_match_interfaces() -> None:
    b = StageBudgets()
    assert (b.endpoint_ms, b.asr_final_ms, b.llm_first_token_ms, b.first_clause_ms) == (
        200, 300, 400, 450
    )  # fmt: skip
    assert (b.tts_first_audio_ms, b.v2v_ms, b.vlm_first_token_ms) == (500, 600, 700)
    assert (b.barge_in_ms, b.tool_ms) == (100, 1000)


def test_from_dict_accepts_names_with_or_without_ms() -> None:
    b = StageBudgets.from_dict({"endpoint": 150, "v2v_ms": 800.5})
    assert b.endpoint_ms == 150 and b.v2v_ms == 800.5 and b.asr_final_ms == 300
    assert StageBudgets.from_dict({}) == StageBudgets()


@pytest.mark.parametrize(
    "table",
    [{"endpont": 100}, {"latency_ms": 1}, {"endpoint": -1}, {"endpoint": 0},
     {"endpoint": "fast"}, {"endpoint": True}, {"v2v": float("nan")}, {"tool": float("inf")}],
)  # fmt: skip
def test_from_dict_refuses_bad_tables(table: dict[str, object]) -> None:
    with pytest.raises(ConfigError) as err:
        StageBudgets.from_dict(table)
    assert err.value.code == "invalid_config"


def test_unknown_key_message_lists_the_valid_names() -> None:
    with pytest.raises(ConfigError, match=r"valid names: .*asr_final.*endpoint"):
        StageBudgets.from_dict({"endpont": 100})


def test_every_stage_has_a_policy() -> None:
    for stage in (*RECORD_STAGES, "barge_in"):
        assert stage in DEFAULT_POLICIES and DEFAULT_POLICIES[stage].reason
    assert policy_for("asr_final").actions == (Degrade.USE_LAST_PARTIAL,)
    assert Degrade.QUICK_ACKNOWLEDGEMENT in policy_for("llm_first_token").actions
    assert Degrade.ANSWER_WITHOUT_FRAME in policy_for("vlm_first_token").actions
    assert policy_for("tool").actions == (Degrade.HOLDING_PHRASE,)
    assert policy_for("nonsense").actions == (Degrade.RECORD_ONLY,)


def test_record_marks_relative_to_speech_end_and_flags_breaches() -> None:
    rec = LatencyRecord(generation=7, anchor_ms=10_000.0)
    assert rec.mark("endpoint", 10_180.0) is False
    assert rec.mark("asr_final", 10_340.0) is True  # 340 > 300
    rec.mark("llm_first_token", 10_290.0)
    rec.mark("v2v", 10_365.0)
    rec.mark("v2v", 10_900.0)  # the first mark wins
    d = rec.to_dict()
    assert list(d) == ["generation", *RECORD_STAGES, "budget_breaches", "degraded"]
    assert d["generation"] == 7 and d["endpoint"] == 180.0 and d["v2v"] == 365.0
    assert d["asr_final"] == 340.0 and d["vlm_first_token"] is None and d["tool"] is None
    assert d["budget_breaches"] == ["asr_final 340ms > 300ms"]
    json.dumps(d)  # rides on response.done as a JSON string


def test_marks_before_the_anchor_are_settled_when_it_is_known() -> None:
    # A speculative reply reaches llm_first_token before the endpoint fixes the anchor.
    rec = LatencyRecord()
    rec.mark("llm_first_token", 5_100.0)
    assert rec.llm_first_token is None and rec.budget_breaches == []
    rec.anchor(4_600.0)
    assert rec.llm_first_token == 500.0
    assert rec.budget_breaches == ["llm_first_token 500ms > 400ms"]


def test_tool_is_timed_from_its_own_start() -> None:
    rec = LatencyRecord(anchor_ms=0.0)
    assert rec.mark("tool", 1_500.0, since_ms=900.0) is False  # 600 ms of tool time
    assert rec.tool == 1_500.0 and rec.budget_breaches == []
    rec2 = LatencyRecord(anchor_ms=0.0)
    assert rec2.mark("tool", 2_500.0, since_ms=900.0) is True


def test_overdue_flags_running_stages_once_with_their_policy() -> None:
    rec = LatencyRecord(anchor_ms=1_000.0)
    rec.mark("endpoint", 1_150.0)
    stages = ("endpoint", "asr_final", "llm_first_token")
    assert rec.overdue(1_250.0, stages) == []
    due = rec.overdue(1_301.0, stages)
    assert [p.stage for p in due] == ["asr_final"]
    assert rec.overdue(1_350.0, stages) == []  # flagged once
    assert [p.stage for p in rec.overdue(1_401.0, stages)] == ["llm_first_token"]
    rec.mark("asr_final", 1_420.0)  # finishes late: still one breach entry
    assert [b.split()[0] for b in rec.budget_breaches] == ["asr_final", "llm_first_token"]
    assert rec.asr_final == 420.0


def test_overdue_without_anchor_does_nothing() -> None:
    assert LatencyRecord().overdue(1e9) == []


def test_degraded_notes_are_recorded_once() -> None:
    rec = LatencyRecord(anchor_ms=0.0)
    rec.degrade("asr_final", Degrade.USE_LAST_PARTIAL)
    rec.degrade("asr_final", Degrade.USE_LAST_PARTIAL)
    rec.degrade("vlm_first_token", "answered without the frame")
    assert rec.to_dict()["degraded"] == [
        "asr_final:use_last_partial",
        "vlm_first_token:answered without the frame",
    ]


def test_unknown_stage_is_refused() -> None:
    with pytest.raises(ConfigError):
        LatencyRecord(anchor_ms=0.0).mark("barge_in", 10.0)
    with pytest.raises(ConfigError):
        StageBudgets().budget_ms("nope")
