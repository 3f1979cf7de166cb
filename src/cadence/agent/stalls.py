"""Slow and stalled replies: say something while the model is slow to start, and end a reply
whose language model or synthesizer stops making progress (docs/reliability.md, "Faults").

* No audio `turns.holding_phrase_ms` after the end of user speech (or the request), and no
  clause sent to TTS yet: the holding phrase is spoken, once — the `quick_acknowledgement`
  degrade of a late v2v, recorded in the turn's latency record.
* No audio at all `turns.stall_ms` after the answer was due: the turn controller drops it
  (`generation_stalled`); the session reports it with `stalled_error`.
* Audio played, then no progress (no new text from the model nor a heartbeat while it
  evaluates a long prompt, no clause back from TTS, no tool running) for `turns.stall_ms`:
  `StallWatch` stops the reply (`Generation.fail`).

Either way the client gets an `error` (`stage_timeout`, naming the stage) and a failed
`response.done`; the history keeps what was played, and the session listens again.
"""

from __future__ import annotations

from collections.abc import Callable

from cadence.agent.budgets import Degrade, LatencyRecord
from cadence.agent.generation import STAGE_NAMES, Generation
from cadence.agent.turns import TurnConfig
from cadence.errors import StageTimeout


def busy_stage(gen: Generation) -> str:
    """The stage the reply is waiting on: TTS first (it holds the audio back), then the LLM."""
    return next((name for name in ("tts", "llm") if gen.stages[name].busy), "reply")


def stalled_error(gen: Generation, stall_ms: float) -> StageTimeout:
    stage = busy_stage(gen)
    what = STAGE_NAMES.get(stage, "the reply")
    return StageTimeout(
        f"{what} stalled: no progress for {stall_ms / 1000:g} s, so the reply was ended "
        "(the limit is turns.stall_ms); the next turn is answered as usual"
    )


class StallWatch:
    """Watches the answer in progress; call `check` on every tick of the session."""

    def __init__(self, config: Callable[[], TurnConfig], phrase: Callable[[], str]) -> None:
        self._config = config
        self._phrase = phrase
        self._progress: tuple[int, ...] | None = None  # generation id, then each stage's steps
        self._since_ms = 0.0

    def check(
        self, gen: Generation, record: LatencyRecord | None, now_ms: float, *, audible: bool
    ) -> None:
        config = self._config()
        if not audible:  # before the first audio the controller's stall rule applies
            self._hold(gen, record, now_ms, config.holding_phrase_ms)
        # A running tool is bounded by its own timeout (docs/tools.md), not by this one.
        if gen.finished or not audible or any(c.phase == "running" for c in gen.calls):
            self._progress = None
            return
        progress = (gen.generation, *(stage.steps for stage in gen.stages.values()))
        if progress != self._progress:
            self._progress, self._since_ms = progress, now_ms
        elif now_ms - self._since_ms >= config.stall_ms:
            gen.fail(stalled_error(gen, config.stall_ms))

    def _hold(
        self, gen: Generation, record: LatencyRecord | None, now_ms: float, holding_ms: float
    ) -> None:
        if record is None or record.anchor_ms is None or gen.speech is None or gen.finished:
            return
        if gen.calls:  # a tool call is under way: its own budget says when to hold (tool_turn)
            return
        if now_ms - record.anchor_ms >= holding_ms and gen.speech.interject(self._phrase()):
            record.degrade("v2v", Degrade.QUICK_ACKNOWLEDGEMENT)
