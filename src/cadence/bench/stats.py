"""Distributions of the measured turns, and pass/fail against the budgets and the targets.

Budgets are INTERFACES' per-stage deadlines (checked at p95); targets are the bench issue's
distribution goals, which depend on how many sessions ran at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from cadence.agent.budgets import StageBudgets
from cadence.bench.records import SERVER_STAGES, TurnRecord

# Rows of every table: client metrics first, then the server's timeline, then derived ones.
METRICS = (
    "v2v",
    "barge_in_stop",
    *SERVER_STAGES,
    "server_v2v",
    "tts_after_clause",
    "transport",
)
METRIC_HELP = {
    "v2v": "end of speech → first reply audio at the client",
    "barge_in_stop": "user speech start → last agent audio played",
    "endpoint": "server decided the turn ended",
    "asr_final": "final transcript ready",
    "vlm_first_token": "first token of the vision model (visual turns)",
    "llm_first_token": "first LLM token",
    "first_clause": "first clause ready for TTS",
    "tts_first_audio": "first TTS audio",
    "server_v2v": "first reply audio left the server",
    "tts_after_clause": "tts_first_audio − first_clause",
    "transport": "client v2v − server v2v",
}


@dataclass(frozen=True)
class Dist:
    n: int
    p50: float | None
    p95: float | None
    max: float | None
    mean: float | None

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Dist:
        data = np.array([v for v in values if v is not None], dtype=np.float64)
        if data.size == 0:
            return cls(0, None, None, None, None)
        return cls(
            int(data.size),
            round(float(np.percentile(data, 50)), 1),
            round(float(np.percentile(data, 95)), 1),
            round(float(data.max()), 1),
            round(float(data.mean()), 1),
        )


@dataclass(frozen=True)
class Check:
    """One pass/fail line: `metric`'s `stat` must be ≤ `limit_ms`."""

    name: str
    metric: str
    stat: str  # p50 | p95
    limit_ms: float
    value: float | None
    passed: bool | None  # None: not measured (no data, or not applicable to this run)
    note: str = ""


def distributions(turns: Sequence[TurnRecord]) -> dict[str, Dist]:
    return {m: Dist.of(t.stage(m) for t in turns) for m in METRICS}


def rates(turns: Sequence[TurnRecord]) -> dict[str, float | int | None]:
    """Quality figures: answered and correct replies, WER, backchannels, false starts."""
    asked = [t for t in turns if t.kind in ("question", "barge_in")]
    graded = [t for t in asked if t.correct is not None]
    wers = [t.wer for t in turns if t.wer is not None]
    backchannels = [t for t in turns if t.continued is not None]
    barge = [t for t in turns if t.kind == "barge_in"]

    def share(part: int, whole: int) -> float | None:
        return round(part / whole, 3) if whole else None

    return {
        "turns": len(turns),
        "answered": share(sum(t.answered for t in asked), len(asked)),
        "correct": share(sum(bool(t.correct) for t in graded), len(graded)),
        "wer_mean": round(float(np.mean(wers)), 3) if wers else None,
        "backchannel_continued": share(
            sum(bool(t.continued) for t in backchannels), len(backchannels)
        ),
        "barge_in_agent_speaking": share(
            sum(bool(t.agent_was_speaking) for t in barge), len(barge)
        ),
        "false_starts": sum(t.false_starts for t in turns),
        "talked_over": sum(t.talked_over for t in turns),
        "errors": sum(len(t.errors) for t in turns),
        "mic_late_ms_max": max((t.mic_late_ms for t in turns), default=None),
    }


def _check(name: str, metric: str, stat: str, limit: float, dists: dict[str, Dist]) -> Check:
    value = getattr(dists[metric], stat)
    return Check(name, metric, stat, limit, value, None if value is None else value <= limit)


def budget_checks(dists: dict[str, Dist], budgets: StageBudgets | None = None) -> list[Check]:
    """INTERFACES default budgets (deadlines per turn), checked at p95."""
    b = budgets or StageBudgets()
    rows = [(stage, stage, b.budget_ms(stage)) for stage in SERVER_STAGES]
    rows += [("v2v (server)", "server_v2v", b.v2v_ms), ("v2v (client)", "v2v", b.v2v_ms)]
    rows += [("barge-in stop", "barge_in_stop", b.barge_in_ms)]
    return [_check(name, metric, "p95", limit, dists) for name, metric, limit in rows]


def target_checks(dists: dict[str, Dist], sessions: int) -> list[Check]:
    """The bench issue's targets; single-session ones only count for single-session runs."""
    single = [
        _check("v2v p50 ≤ 400 ms", "v2v", "p50", 400.0, dists),
        _check("v2v p95 ≤ 600 ms", "v2v", "p95", 600.0, dists),
        _check("TTS first audio ≤ 60 ms after clause", "tts_after_clause", "p95", 60.0, dists),
        _check("transcript ≤ 150 ms after speech", "asr_final", "p95", 150.0, dists),
    ]
    if sessions > 1:
        note = f"single-session target; this run had {sessions} sessions"
        single = [Check(**{**asdict(c), "passed": None, "note": note}) for c in single]
    checks = [*single, _check("barge-in stop p95 ≤ 100 ms", "barge_in_stop", "p95", 100.0, dists)]
    concurrent = _check("≥ 4 sessions: v2v p95 ≤ 1 s", "v2v", "p95", 1000.0, dists)
    if sessions < 4:
        concurrent = Check(
            **{**asdict(concurrent), "passed": None, "note": "run with --sessions 4 or more"}
        )
    return [*checks, concurrent]


def summarize(turns: Sequence[TurnRecord], sessions: int) -> dict[str, object]:
    """Everything a report shows, overall and per scenario (JSON-ready)."""
    dists = distributions(turns)
    scenarios = sorted({t.scenario for t in turns})
    return {
        "overall": {"stages": {k: asdict(v) for k, v in dists.items()}, "rates": rates(turns)},
        "scenarios": {
            name: {
                "stages": {k: asdict(v) for k, v in distributions(sub).items()},
                "rates": rates(sub),
            }
            for name in scenarios
            for sub in [[t for t in turns if t.scenario == name]]
        },
        "budgets": [asdict(c) for c in budget_checks(dists)],
        "targets": [asdict(c) for c in target_checks(dists, sessions)],
    }
