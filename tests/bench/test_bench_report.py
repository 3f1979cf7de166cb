"""Stats, budgets, report files and `bench compare`, on hand-made turns (no models)."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import pytest

from cadence.bench.cli import add_bench_parser
from cadence.bench.compare import render, verdict_changes
from cadence.bench.records import TurnRecord, matches, normalize, word_error_rate
from cadence.bench.report import BenchResult, load_result, markdown, terminal_table, write_json
from cadence.bench.runner import write_outputs
from cadence.bench.stats import Dist, budget_checks, distributions, summarize, target_checks
from cadence.errors import InputError


def turn(client_v2v: float | None, **server: float) -> TurnRecord:
    rec = TurnRecord("single", 0, 0, 0, "question", "piper", 1.0, 50.0, "What is two plus two?")
    rec.v2v_ms, rec.answered, rec.server = client_v2v, client_v2v is not None, dict(server)
    rec.expect, rec.reply = r"\b(four|4)\b", "It is 4."
    rec.correct = matches(rec.expect, rec.reply)
    return rec


def result(v2vs: list[float], sessions: int = 1) -> BenchResult:
    turns = [turn(v, first_clause=v - 100, tts_first_audio=v - 20, v2v=v - 5) for v in v2vs]
    meta = {"target": "inproc", "scenarios": ["single"], "sessions": sessions, "trials": 1}
    return BenchResult(meta, turns)


def test_distribution_percentiles_and_empty() -> None:
    d = Dist.of([100.0, 200.0, 300.0, 400.0, None])
    assert (d.n, d.p50, d.max, d.mean) == (4, 250.0, 400.0, 250.0)
    assert d.p95 == pytest.approx(385.0)
    assert Dist.of([None]) == Dist(0, None, None, None, None)


def test_turn_stages_and_derived_metrics() -> None:
    t = turn(500.0, first_clause=300, tts_first_audio=380, v2v=470, endpoint=True)  # type: ignore[arg-type]
    assert t.stage("v2v") == 500.0
    assert t.stage("server_v2v") == 470.0
    assert t.stage("tts_after_clause") == 80.0
    assert t.stage("transport") == 30.0
    assert t.stage("endpoint") is None  # a bool is not a number of ms
    assert t.stage("asr_final") is None


def test_wer_and_expected_answer_normalize_numbers_and_punctuation() -> None:
    assert normalize("It's 2 + 2, four!") == "it's two two four"
    assert word_error_rate("What is two plus two?", "what is 2 plus 2") == 0.0
    assert word_error_rate("What is two plus two?", "") == 1.0
    assert word_error_rate("a b c d", "a b x d") == 0.25
    assert matches(r"\b(eight|8)\b", "A spider has 8 legs.") is True
    assert matches(r"\bparis\b", "It is Rome.") is False
    assert matches(None, "anything") is None


def test_budgets_and_targets_follow_the_session_count() -> None:
    fast = distributions(result([300.0, 350.0, 380.0]).turns)
    checks = {c.name: c for c in target_checks(fast, sessions=1)}
    assert checks["v2v p50 ≤ 400 ms"].passed is True
    assert checks["TTS first audio ≤ 60 ms after clause"].passed is False  # 80 ms after
    assert checks["barge-in stop p95 ≤ 100 ms"].passed is None  # not measured
    assert checks["≥ 4 sessions: v2v p95 ≤ 1 s"].passed is None
    many = {c.name: c for c in target_checks(fast, sessions=4)}
    assert many["≥ 4 sessions: v2v p95 ≤ 1 s"].passed is True
    assert many["v2v p50 ≤ 400 ms"].passed is None and "4 sessions" in many["v2v p50 ≤ 400 ms"].note
    budgets = {c.metric: c for c in budget_checks(fast)}
    assert budgets["v2v"].limit_ms == 600.0 and budgets["v2v"].passed is True
    assert budgets["endpoint"].passed is None


def test_summary_has_overall_per_scenario_and_rates() -> None:
    s = summarize(result([300.0, 700.0]).turns, sessions=1)
    assert s["overall"]["stages"]["v2v"]["n"] == 2  # type: ignore[index]
    assert set(s["scenarios"]) == {"single"}  # type: ignore[arg-type]
    rates = s["overall"]["rates"]  # type: ignore[index]
    assert rates["answered"] == 1.0 and rates["correct"] == 1.0 and rates["talked_over"] == 0


def test_json_round_trip_and_refusals(tmp_path: Path) -> None:
    original = result([300.0, 700.0])
    path = tmp_path / "r.json"
    write_json(original, path)
    loaded = load_result(path)
    assert loaded.turns == original.turns and loaded.summary == original.summary
    (tmp_path / "bad.json").write_text('{"x": 1}')
    with pytest.raises(InputError, match="not a cadence bench result"):
        load_result(tmp_path / "bad.json")
    with pytest.raises(InputError, match="does not exist"):
        load_result(tmp_path / "missing.json")


def test_table_markdown_and_files(tmp_path: Path) -> None:
    res = result([300.0, 700.0])
    res.meta["skipped"] = {"visual": "no video input yet"}
    table = terminal_table(res)
    assert "v2v" in table and "p95" in table and "skipped visual: no video input yet" in table
    assert "FAIL  v2v p95 ≤ 600 ms" in table
    md = markdown(res, {"latency CDF": "x.png"})
    assert md.startswith("# cadence bench") and "![latency CDF](x.png)" in md
    paths = write_outputs(res, tmp_path / "out", "run")
    assert json.loads(paths["json"].read_text())["cadence_bench"] == 1
    for key in ("cdf", "waterfall"):
        assert paths[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "## Turns" in paths["markdown"].read_text()


def test_compare_shows_changes_and_flipped_verdicts() -> None:
    slow, fast = result([900.0, 1000.0]), result([300.0, 350.0])
    text = render(slow, fast, "slow.json", "fast.json")
    assert "v2v" in text and "-" in text and "A = slow.json" in text
    changes = verdict_changes(slow, fast)
    assert any(c.startswith("v2v p50 ≤ 400 ms: FAIL → pass") for c in changes)


def test_cli_parses_run_and_runs_compare(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser(prog="cadence")
    add_bench_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        ["bench", "run", "--target", "ws://127.0.0.1:9", "--scenario", "single,noisy"]
    )
    assert (args.target, args.scenario, args.sessions, args.out.name) == (
        "ws://127.0.0.1:9",
        "single,noisy",
        1,
        "bench-results",
    )
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    write_json(result([900.0]), a)
    write_json(result([300.0]), b)
    args = parser.parse_args(["bench", "compare", str(a), str(b)])
    assert asyncio.run(args.handler(args)) == 0
    assert "verdicts that changed" in capsys.readouterr().out


@pytest.mark.parametrize("target", ["ws://127.0.0.1:1", "webrtc://127.0.0.1:1"])
async def test_an_unreachable_target_is_one_clear_error(target: str) -> None:
    from cadence.bench.runner import BenchOptions, run_bench
    from cadence.errors import CadenceError

    with pytest.raises(CadenceError, match="is the server running"):
        await run_bench(BenchOptions(target=target, trials=1, warmup=0))
