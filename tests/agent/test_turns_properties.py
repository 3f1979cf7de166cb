"""Property tests: random event sequences against the turn controller's invariants.

A small model of the session reads the actions and checks: one audible generation at most,
nothing of a cancelled generation afterwards, history holds exactly what was played.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cadence.agent.events import (
    Action,
    CancelGeneration,
    CancelRequested,
    CommitAssistantTurn,
    Event,
    LlmDelta,
    LlmDone,
    Metric,
    PausePlayback,
    PlaybackDone,
    PlaybackProgress,
    PromoteGeneration,
    ProsodyCue,
    ResponseRequested,
    ResumePlayback,
    SpeechEnded,
    SpeechStarted,
    StartGeneration,
    StateChanged,
    StopPlayback,
    Tick,
    Transcript,
    TtsAudio,
    VoiceProbability,
)
from cadence.agent.turns import TurnConfig, TurnController

TEXTS = ["", "mm-hmm", "Yeah.", "stop", "um", "and", "what is the capital of",
         "What is the capital of France?", "Tell me about Rome.", "okay stop", "  "]  # fmt: skip
CLAUSES = ["", "Sure.", "Paris is the capital.", "It has two million people, roughly.", " "]
STEPS = [0.0, 0.0, 20.0, 20.0, 50.0, 100.0, 160.0, 300.0, 800.0, 2000.0, -50.0]


def heard_words(clauses: list[tuple[str, float]], played_ms: float) -> str:
    """Oracle: a word is heard if its share of its clause ended by `played_ms`."""
    out: list[str] = []
    offset = 0.0
    for text, duration in clauses:
        tokens = text.split()
        total = sum(len(t) + 1 for t in tokens)
        done = 0
        for i, token in enumerate(tokens):
            done += len(token) + 1
            end = offset + duration if i == len(tokens) - 1 else offset + duration * done / total
            if end <= played_ms:
                out.append(token)
        offset += duration
    return " ".join(out)


@dataclass
class Model:
    """What a correct session would believe, built only from the controller's actions."""

    current: int | None = None
    speculative: dict[int, bool] = field(default_factory=dict)
    clauses: dict[int, list[tuple[str, float]]] = field(default_factory=dict)
    played: dict[int, float] = field(default_factory=dict)
    cancelled: set[int] = field(default_factory=set)
    committed: set[int] = field(default_factory=set)
    paused: set[int] = field(default_factory=set)
    next_id: int = 1
    last_state: object = None

    def before(self, event: Event) -> None:
        """Record what the controller may know of the event (only for its live generation)."""
        g = getattr(event, "generation", None)
        if g is None or g != self.current:
            return
        if isinstance(event, TtsAudio):
            duration = event.audio_ms if math.isfinite(event.audio_ms) else 0.0
            self.clauses[g].append((event.text, max(0.0, duration)))
        elif isinstance(event, PlaybackProgress) and not self.speculative[g]:
            if math.isfinite(event.played_ms):
                self.played[g] = max(self.played[g], event.played_ms)
        elif isinstance(event, PlaybackDone) and not self.speculative[g]:
            self.played[g] = math.inf

    def after(self, actions: list[Action]) -> None:
        for action in actions:
            g = getattr(action, "generation", None)
            assert not (g in self.cancelled and not isinstance(action, Metric)), action
            match action:
                case StartGeneration():
                    assert action.generation == self.next_id
                    self.next_id += 1
                    assert self.current is None, "a second live generation"
                    self.current = action.generation
                    self.speculative[action.generation] = action.speculative
                    self.clauses[action.generation], self.played[action.generation] = [], 0.0
                case PromoteGeneration():
                    assert action.generation == self.current
                    assert self.speculative[action.generation]
                    self.speculative[action.generation] = False
                case PausePlayback() | ResumePlayback() | StopPlayback():
                    assert action.generation == self.current
                    assert not self.speculative[action.generation]
                    if isinstance(action, PausePlayback):
                        self.paused.add(action.generation)
                    elif isinstance(action, ResumePlayback):
                        assert action.generation in self.paused
                        self.paused.discard(action.generation)
                case CommitAssistantTurn():
                    assert action.generation == self.current
                    assert action.generation not in self.committed
                    assert not self.speculative[action.generation]
                    expected = heard_words(self.clauses[g], self.played[g])  # type: ignore[index]
                    assert action.text == expected, (action.text, expected, self.clauses[g])
                    self.committed.add(action.generation)
                    self.current = None
                case CancelGeneration():
                    self.cancelled.add(action.generation)
                    if action.generation == self.current:
                        self.current = None
                case StateChanged():
                    assert action.state != self.last_state
                    self.last_state = action.state


@st.composite
def events(draw: st.DrawFn, t: float, latest: int) -> list[Event]:
    """One random event, or a burst of audio and playback for the newest generation."""
    if draw(st.integers(0, 9)) == 0:
        text, ms = draw(st.sampled_from(CLAUSES[1:4])), draw(st.floats(1.0, 2000.0))
        played = draw(st.floats(0.0, 4000.0))
        return [TtsAudio(t, latest, text, ms), PlaybackProgress(t, latest, played)]
    return [draw(event(t, latest))]


@st.composite
def event(draw: st.DrawFn, t: float, latest: int) -> Event:
    gen = draw(st.sampled_from([latest, latest, latest, latest - 1, 0, latest + 1]))
    # Weighted towards user speech and playback; client requests are rarer, as in life.
    kind = draw(st.sampled_from([0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 10, 11, 12, 13, 14, 14]))
    if kind == 0:
        return SpeechStarted(t, t - 60, draw(st.sampled_from([0.0, 0.0, 0.3, 0.7, 1.0])))
    if kind == 1:
        return SpeechEnded(t, t - 80)
    if kind in (2, 3):
        end = draw(st.sampled_from([0.0, t - 150, t - 2000]))
        return Transcript(t, draw(st.sampled_from(TEXTS)), draw(st.booleans()), end)
    if kind == 4:
        return ProsodyCue(t, draw(st.floats(-0.5, 1.5)))
    if kind == 5:
        return LlmDelta(t, gen, draw(st.sampled_from(CLAUSES)))
    if kind == 6:
        return LlmDone(t, gen)
    if kind in (7, 8):
        ms = draw(st.sampled_from([0.0, 250.0, 1000.0, 1733.3, -5.0, math.nan]))
        return TtsAudio(t, gen, draw(st.sampled_from(CLAUSES)), ms)
    if kind == 9:
        ms = draw(st.sampled_from([0.0, 100.0, 250.0, 999.0, 1000.0, 2500.0, 1e9, math.nan]))
        return PlaybackProgress(t, gen, ms)
    if kind == 10:
        return PlaybackDone(t, gen)
    if kind == 11:
        return ResponseRequested(t, draw(st.sampled_from([None, "", "Hello"])))
    if kind == 12:
        return CancelRequested(t)
    if kind == 13:
        return VoiceProbability(t, draw(st.floats(0, 1)))
    return Tick(t)


CONFIGS = st.sampled_from([
    TurnConfig(),
    TurnConfig(speculate=False),
    TurnConfig(auto_respond=False),
    TurnConfig(barge_in=False),
    TurnConfig(resume_after_ms=100.0, asr_final_wait_ms=50.0, max_user_turn_ms=1000.0,
               stall_ms=500.0, speculative_silence_ms=20.0),
])  # fmt: skip


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=CONFIGS, data=st.data())
def test_random_sequences_keep_the_invariants(config: TurnConfig, data: st.DataObject) -> None:
    ctl, model = TurnController(config), Model()
    t = 0.0
    for _ in range(data.draw(st.integers(1, 80))):
        t += data.draw(st.sampled_from(STEPS))
        latest = model.next_id - 1
        for ev in data.draw(events(t, latest)):
            model.before(ev)
            actions = ctl.handle(ev)  # never raises
            model.after(actions)
            if model.last_state is not None:
                assert ctl.state == model.last_state


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_a_reply_committed_after_any_interruption_is_a_prefix_of_the_reply(
    data: st.DataObject,
) -> None:
    """Drive one real turn, then interrupt at a random point: history is a word prefix."""
    ctl = TurnController()
    ctl.handle(SpeechStarted(60.0, 0.0))
    ctl.handle(SpeechEnded(1080.0, 1000.0))
    ctl.handle(Transcript(1150.0, "Tell me about Rome.", True, 1000.0))
    for t in range(1160, 1400, 20):
        ctl.handle(Tick(float(t)))
    gen = ctl.generation
    assert gen is not None
    clauses = data.draw(st.lists(st.sampled_from(CLAUSES[1:4]), min_size=1, max_size=4))
    durations = data.draw(st.lists(st.floats(1.0, 3000.0), min_size=len(clauses),
                                   max_size=len(clauses)))  # fmt: skip
    for text, ms in zip(clauses, durations, strict=True):
        ctl.handle(TtsAudio(1400.0, gen, text, ms))
    played = data.draw(st.floats(0.0, sum(durations) * 1.2))
    ctl.handle(PlaybackProgress(1500.0, gen, played))
    actions = ctl.handle(CancelRequested(1510.0))
    committed = [a for a in actions if isinstance(a, CommitAssistantTurn)]
    full = " ".join(" ".join(clauses).split())
    assert len(committed) == 1 and committed[0].interrupted
    heard = committed[0].text.split()
    assert heard == full.split()[: len(heard)]
    assert committed[0].text == heard_words(list(zip(clauses, durations, strict=True)), played)
