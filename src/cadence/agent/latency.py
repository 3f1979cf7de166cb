"""Per-turn stage timeline → the latency record of INTERFACES.md.

Stages are marked with absolute session-clock times as they happen (a speculative reply
can reach a stage before the endpoint is even decided); the record expresses them in ms
from the end of user speech, so it reads as a timeline.
"""

from __future__ import annotations

from typing import Any

from cadence.agent.budgets import StageBudgets

STAGES = (
    "endpoint",
    "asr_final",
    "llm_first_token",
    "first_clause",
    "tts_first_audio",
    "vlm_first_token",
    "tool",
    "v2v",
)


class TurnTimeline:
    def __init__(self, generation: int, budgets: StageBudgets) -> None:
        self.generation = generation
        self.budgets = budgets
        self.anchor_ms: float | None = None
        self._marks: dict[str, float] = {}
        self.degraded: list[str] = []

    def anchor(self, speech_end_ms: float) -> None:
        self.anchor_ms = speech_end_ms

    def mark(self, stage: str, t_ms: float) -> None:
        """First time wins: later chunks of the same stage do not move it."""
        self._marks.setdefault(stage, t_ms)

    def degrade(self, what: str) -> None:
        self.degraded.append(what)

    def since_anchor(self, stage: str) -> float | None:
        t = self._marks.get(stage)
        if t is None or self.anchor_ms is None:
            return None
        return round(t - self.anchor_ms, 1)

    def breaches(self) -> list[str]:
        late = []
        for stage in STAGES:
            value = self.since_anchor(stage)
            budget = getattr(self.budgets, f"{stage}_ms", None)
            if value is not None and budget is not None and value > budget:
                late.append(f"{stage} {value:.0f}ms > {budget}ms")
        return late

    def record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"generation": self.generation}
        for stage in STAGES:
            record[stage] = self.since_anchor(stage)
        record["budget_breaches"] = self.breaches()
        record["degraded"] = list(self.degraded)
        return record
