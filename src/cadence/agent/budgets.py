"""Per-stage latency budgets, what to do when a stage is late, and the per-turn latency record.

Deadlines are milliseconds from the end of user speech (INTERFACES.md); a record marks when
each stage finished, flags breaches as they happen and lists the degrade policies that acted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum

from cadence.errors import ConfigError

# Stages of the latency record, in timeline order; all measured from the end of user speech.
RECORD_STAGES = (
    "endpoint",
    "asr_final",
    "llm_first_token",
    "first_clause",
    "tts_first_audio",
    "vlm_first_token",
    "tool",
    "v2v",
)


@dataclass(frozen=True)
class StageBudgets:
    """Deadlines per stage in milliseconds. `barge_in_ms` counts from user speech start and
    `tool_ms` from the tool call's start; every other one from the end of user speech."""

    endpoint_ms: float = 200.0
    asr_final_ms: float = 300.0
    llm_first_token_ms: float = 400.0
    first_clause_ms: float = 450.0
    tts_first_audio_ms: float = 500.0
    v2v_ms: float = 600.0
    vlm_first_token_ms: float = 700.0
    barge_in_ms: float = 100.0
    tool_ms: float = 1000.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"budget {f.name} must be a number of ms, not {value!r}")
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"budget {f.name} must be a positive number of ms, not {value}")

    @classmethod
    def from_dict(cls, table: Mapping[str, object]) -> StageBudgets:
        """Build from a config `budgets` table; keys may omit the `_ms` suffix."""
        known = {f.name for f in fields(cls)}
        values: dict[str, object] = {}
        for key, value in table.items():
            name = key if key.endswith("_ms") else f"{key}_ms"
            if name not in known:
                valid = ", ".join(sorted(n.removesuffix("_ms") for n in known))
                raise ConfigError(f"unknown budget {key!r} in [budgets]; valid names: {valid}")
            values[name] = value
        return cls(**values)  # type: ignore[arg-type]  # checked in __post_init__

    def budget_ms(self, stage: str) -> float:
        try:
            return float(getattr(self, f"{stage}_ms"))
        except AttributeError:
            raise ConfigError(f"no budget for stage {stage!r}") from None


class Degrade(StrEnum):
    """Things the session can do when a stage is late."""

    USE_LAST_PARTIAL = "use_last_partial"  # endpoint on the last partial transcript
    SHORTEN_CONTEXT = "shorten_context"  # fewer history turns, so prefill is shorter
    QUICK_ACKNOWLEDGEMENT = "quick_acknowledgement"  # speak a short filler ("Let me see.")
    SHORTER_FIRST_CLAUSE = "shorter_first_clause"  # let the chunker cut at the first comma
    TEXT_ONLY_MODEL = "text_only_model"  # route the turn away from the VLM
    ANSWER_WITHOUT_FRAME = "answer_without_frame"  # drop the image, say so in the reply
    HOLDING_PHRASE = "holding_phrase"  # a tool is slow: speak "One moment."
    HARD_STOP = "hard_stop"  # barge-in: flush the output buffers, do not wait for a pause
    RECORD_ONLY = "record_only"  # nothing left to do but record the breach


@dataclass(frozen=True)
class DegradePolicy:
    """What the session does when `stage` misses its deadline, and why."""

    stage: str
    actions: tuple[Degrade, ...]
    reason: str


DEFAULT_POLICIES: Mapping[str, DegradePolicy] = {
    p.stage: p
    for p in (
        DegradePolicy("endpoint", (Degrade.RECORD_ONLY,), "the user may still be talking"),
        DegradePolicy(
            "asr_final", (Degrade.USE_LAST_PARTIAL,), "the last partial is usually close enough"
        ),
        DegradePolicy(
            "llm_first_token",
            (Degrade.QUICK_ACKNOWLEDGEMENT, Degrade.SHORTEN_CONTEXT),
            "fill the silence now; a shorter prompt makes the next turn start sooner",
        ),
        DegradePolicy(
            "first_clause",
            (Degrade.SHORTER_FIRST_CLAUSE,),
            "speak the first few words instead of waiting for a whole sentence",
        ),
        DegradePolicy(
            "tts_first_audio", (Degrade.RECORD_ONLY,), "synthesis has already been asked for"
        ),
        DegradePolicy(
            "v2v", (Degrade.QUICK_ACKNOWLEDGEMENT,), "any audio beats silence past the budget"
        ),
        DegradePolicy(
            "vlm_first_token",
            (Degrade.ANSWER_WITHOUT_FRAME, Degrade.TEXT_ONLY_MODEL),
            "answer from text and say the image was not used",
        ),
        DegradePolicy("tool", (Degrade.HOLDING_PHRASE,), "tell the user the agent is working"),
        DegradePolicy("barge_in", (Degrade.HARD_STOP,), "the user must not talk over the agent"),
    )
}


def policy_for(stage: str) -> DegradePolicy:
    return DEFAULT_POLICIES.get(stage, DegradePolicy(stage, (Degrade.RECORD_ONLY,), "no policy"))


@dataclass
class LatencyRecord:
    """One turn's timeline, in ms from the end of user speech (the anchor, session clock).

    Marks are absolute session times, so a speculative reply may reach a stage before the
    endpoint fixes the anchor; the first mark of a stage wins. A stage past its budget is a
    breach, whether it finished late (`mark`) or is still running late (`overdue`)."""

    budgets: StageBudgets = field(default_factory=StageBudgets)
    generation: int | None = None
    anchor_ms: float | None = None
    endpoint: float | None = None
    asr_final: float | None = None
    llm_first_token: float | None = None
    first_clause: float | None = None
    tts_first_audio: float | None = None
    vlm_first_token: float | None = None
    tool: float | None = None
    v2v: float | None = None
    budget_breaches: list[str] = field(default_factory=list)
    degraded: list[str] = field(default_factory=list)
    _marks: dict[str, tuple[float, float | None]] = field(default_factory=dict, repr=False)

    def anchor(self, speech_end_ms: float) -> None:
        """Fix the end of user speech (or the `response.create` time) the record counts from."""
        self.anchor_ms = speech_end_ms
        for stage in self._marks:
            self._settle(stage)

    def mark(self, stage: str, t_ms: float, *, since_ms: float | None = None) -> bool:
        """Record that `stage` finished at session time `t_ms`; True if it was late.

        `since_ms` starts the budget elsewhere than the anchor (a tool call's start)."""
        if stage not in RECORD_STAGES:
            raise ConfigError(f"unknown latency stage {stage!r}; one of {', '.join(RECORD_STAGES)}")
        self._marks.setdefault(stage, (t_ms, since_ms))
        return self._settle(stage)

    def _settle(self, stage: str) -> bool:
        t_ms, since_ms = self._marks[stage]
        start = self.anchor_ms if since_ms is None else since_ms
        if self.anchor_ms is not None:
            setattr(self, stage, round(t_ms - self.anchor_ms, 1))
        if start is None:
            return False
        elapsed, budget = t_ms - start, self.budgets.budget_ms(stage)
        if elapsed > budget:
            self.breach(stage, f"{stage} {elapsed:.0f}ms > {budget:.0f}ms")
            return True
        return False

    def breach(self, stage: str, note: str | None = None) -> None:
        """Record a breach of `stage` once (the first note about it stays)."""
        if not any(b.split(" ", 1)[0] == stage for b in self.budget_breaches):
            self.budget_breaches.append(note or f"{stage} late")

    def breached(self, stage: str) -> bool:
        return any(b.split(" ", 1)[0] == stage for b in self.budget_breaches)

    def deadline_ms(self, stage: str) -> float | None:
        """Session time at which `stage` is late, once the anchor is known."""
        if self.anchor_ms is None:
            return None
        return self.anchor_ms + self.budgets.budget_ms(stage)

    def overdue(self, t_ms: float, stages: tuple[str, ...] = RECORD_STAGES) -> list[DegradePolicy]:
        """Policies of stages past their deadline at `t_ms`, not finished and not yet flagged.

        Call it on every tick: each overdue stage is flagged once, so its policy acts while the
        stage is still running instead of being noticed afterwards. Only stages the turn
        uses should be passed (a turn without an image has no vlm_first_token)."""
        due: list[DegradePolicy] = []
        for stage in stages:
            deadline = self.deadline_ms(stage)
            if stage == "tool" or stage in self._marks or deadline is None:
                continue  # tools are timed from their own start; finished stages are marked
            if not self.breached(stage) and t_ms > deadline:
                self.breach(stage, f"{stage} > {self.budgets.budget_ms(stage):.0f}ms")
                due.append(policy_for(stage))
        return due

    def degrade(self, stage: str, action: Degrade | str) -> None:
        note = f"{stage}:{action.value if isinstance(action, Degrade) else action}"
        if note not in self.degraded:
            self.degraded.append(note)

    def to_dict(self) -> dict[str, object]:
        """The record as INTERFACES.md spells it (the `latency` object)."""
        out: dict[str, object] = {"generation": self.generation}
        for stage in RECORD_STAGES:
            out[stage] = getattr(self, stage)
        out["budget_breaches"] = list(self.budget_breaches)
        out["degraded"] = list(self.degraded)
        return out
