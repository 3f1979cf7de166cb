"""The turn controller: a pure state machine that decides who holds the floor, and when.

Timestamped events in, actions out (events.py); no I/O, no clock, no randomness: every
turn-taking rule is a function of the event sequence, so it is tested on a simulated clock.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, TypeAlias

from cadence.agent import events as ev
from cadence.agent.endpointing import EndpointConfig, Endpointer, is_backchannel, normalize, words
from cadence.errors import ConfigError

_GenerationEvent: TypeAlias = (
    ev.LlmDelta | ev.LlmDone | ev.TtsAudio | ev.PlaybackProgress | ev.PlaybackDone
)
STALE_FINAL_TOLERANCE_MS = 20.0  # one VAD frame: a final this much older is for an older end
# Echo compares the transcript with the words played from this long before the playback
# position to this long after it (echo path delay, VAD and ASR timing).
ECHO_LOOKBACK_MS, ECHO_LOOKAHEAD_MS = 2000.0, 500.0
ECHO_TEXT_SIMILARITY = 0.8  # difflib ratio of a transcript to a run of the played words


def _similar(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


@dataclass(frozen=True)
class TurnConfig:
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    speculate: bool = True
    # Speculate once this much silence has passed *and* the final transcript is in: the final
    # lands ~130-180 ms after speech end, and a partial usually lacks the last word.
    speculative_silence_ms: float = 150.0
    asr_final_wait_ms: float = 300.0  # the asr_final budget: past it, use the last partial
    auto_respond: bool = True  # False: manual turns, only ev.ResponseRequested answers
    barge_in: bool = True  # False: user speech never pauses the agent
    echo_threshold: float = 0.6  # ev.SpeechStarted at or above this echo likelihood is ignored
    resume_after_ms: float = 700.0  # paused for a possible barge-in, no words: resume
    max_hold_ms: float = 2500.0  # "yeah, and..." still going: hold this long at most
    max_user_turn_ms: float = 30_000.0  # ASR window: a longer monologue is committed in parts
    stall_ms: float = 15_000.0  # an answer with no audio this long after it was due is dropped
    # The session's side (agent/stalls.py): no audio this long after the end of user speech,
    # the holding phrase is spoken; past `stall_ms` without progress, the reply fails.
    holding_phrase_ms: float = 1_500.0
    # A barge-in candidate given up for want of words is taken back if its final transcript
    # brings words this soon after its speech ended (a loaded recognizer is late).
    late_final_ms: float = 2_000.0

    def __post_init__(self) -> None:
        for name in ("speculative_silence_ms", "asr_final_wait_ms", "resume_after_ms",
                     "max_hold_ms", "max_user_turn_ms", "stall_ms",
                     "holding_phrase_ms", "late_final_ms"):  # fmt: skip
            if not getattr(self, name) > 0:
                raise ConfigError(f"turn config {name} must be > 0 ms, not {getattr(self, name)}")
        if not 0 < self.echo_threshold <= 1:
            raise ConfigError(f"echo_threshold must be in (0, 1], not {self.echo_threshold}")

    @classmethod
    def from_dict(cls, table: Mapping[str, Any]) -> TurnConfig:
        """From the profile's `turns` table; endpoint keys sit in it flat or under `endpoint`."""
        own = {f.name for f in fields(cls)} - {"endpoint"}
        ends = {f.name for f in fields(EndpointConfig)}
        endpoint = dict(table.get("endpoint", {}))
        endpoint.update({k: v for k, v in table.items() if k in ends})
        unknown = set(table) - own - ends - {"endpoint"} | set(endpoint) - ends
        if unknown:
            valid = ", ".join(sorted(own | ends))
            raise ConfigError(f"unknown keys {sorted(unknown)} in [turns]; valid keys: {valid}")
        return cls(EndpointConfig(**endpoint), **{k: v for k, v in table.items() if k in own})


def heard_text(clauses: Sequence[tuple[str, float]], played_ms: float) -> str:
    """The words whose audio ended at or before `played_ms`.

    Clauses play back to back, each `(text, audio_ms)`; inside a clause the words share its
    duration in proportion to their length plus one (the gap after each word)."""
    heard: list[str] = []
    start = 0.0
    for text, duration in clauses:
        tokens, end = text.split(), start + duration
        if end <= played_ms:
            heard += tokens
            start = end
            continue
        total = sum(len(t) + 1 for t in tokens)
        elapsed = 0
        for token in tokens:
            elapsed += len(token) + 1
            if start + duration * elapsed / total > played_ms:
                break
            heard.append(token)
        break
    return " ".join(heard)


@dataclass
class _Generation:
    id: int
    user_text: str  # what it answers
    speculative: bool
    due_ms: float  # when it became the answer (start or promotion): stall timing
    commit_text: str = ""  # the user turn committed once the answer is heard
    user_committed: bool = False
    clauses: list[tuple[str, float]] = field(default_factory=list)
    played_ms: float = 0.0
    has_text: bool = False
    llm_done: bool = False
    paused: bool = False
    audible: bool = False


@dataclass
class _Turn:
    """The user's turn in progress; transcripts cover its audio from `start_ms`."""

    start_ms: float
    candidate: bool = False  # began over the agent's reply: feedback words are dropped
    text: str = ""
    final: bool = False  # `text` is the final for the latest speech end
    text_end_ms: float = 0.0
    speech_end_ms: float | None = None
    prosody: float | None = None
    endpointed: bool = False


def _finite(value: float, default: float) -> float:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else default


class TurnController:
    """Feed events with `handle`; execute the returned actions in order.

    Ordering contract with the session: a generation's prompt is the history as it was at
    its `ev.StartGeneration` plus its `user_text`; `ev.CommitUserTurn` for that text follows once
    the answer is first heard (or cancelled), then `ev.CommitAssistantTurn` when it ends."""

    def __init__(self, config: TurnConfig | None = None) -> None:
        self.config = config or TurnConfig()
        self.endpointer = Endpointer(self.config.endpoint)
        self._state = ev.TurnState.LISTENING
        self._now = 0.0
        self._next_id = 1
        self._gen: _Generation | None = None
        self._turn: _Turn | None = None
        self._given_up: _Turn | None = None  # a wordless candidate a late final may revive
        self._speech_active = False
        self._segment_start_ms = 0.0
        self._hold: str | None = None  # "reply": possible barge-in; "resume": user went on
        self._hold_since_ms = 0.0

    @property
    def state(self) -> ev.TurnState:
        return self._state

    @property
    def user_turn_open(self) -> bool:
        """A user turn is being listened to (its audio is worth transcribing)."""
        return self._turn is not None

    @property
    def generation(self) -> int | None:
        """The live generation (speculative or not), if any."""
        return self._gen.id if self._gen else None

    def handle(self, event: ev.Event) -> list[ev.Action]:
        out: list[ev.Action] = []
        self._now = max(self._now, _finite(getattr(event, "t_ms", self._now), self._now))
        match event:
            case ev.SpeechStarted():
                self._on_speech_started(event, out)
            case ev.SpeechEnded():
                self._on_speech_ended(event)
            case ev.Transcript():
                self._on_transcript(event, out)
            case ev.ProsodyCue() if self._turn and 0 <= event.end_of_turn <= 1:
                self._turn.prosody = event.end_of_turn
            case ev.LlmDelta() | ev.LlmDone() | ev.TtsAudio() | ev.PlaybackProgress():
                self._on_generation_event(event, out)
            case ev.PlaybackDone():
                self._on_generation_event(event, out)
            case ev.ResponseRequested():
                self._on_response_requested(event, out)
            case ev.CancelRequested() if self._gen and not self._gen.speculative:
                self._finish(self._gen, out, interrupted=True, cancel="cancel_requested")
            case _:
                pass  # Tick, VoiceProbability, unknown: time alone may move things on
        self._on_time(out)
        state = self._derive_state()
        if state != self._state:
            self._state = state
            out.append(ev.StateChanged(state))
        return out

    # ---- user speech ---------------------------------------------------------------------

    def _on_speech_started(self, event: ev.SpeechStarted, out: list[ev.Action]) -> None:
        if not _finite(event.echo_likelihood, 0.0) < self.config.echo_threshold:
            out.append(ev.Metric("echo_ignored", self.generation, f"{event.echo_likelihood:.2f}"))
            return
        was_active, self._speech_active = self._speech_active, True
        audio_ms = _finite(event.audio_ms, self._now)
        self._segment_start_ms = audio_ms
        gen, turn = self._gen, self._turn
        if gen and not gen.speculative:
            if not self.config.barge_in:
                return
            if self._hold is None:
                gen.paused = True
                out.append(ev.PausePlayback(gen.id))  # first: the barge-in budget counts from here
                resumable = not gen.user_committed and turn is not None and turn.endpointed
                self._hold = "resume" if resumable else "reply"
            self._hold_since_ms = self._now
            if turn is None:
                self._begin_turn(audio_ms, out, candidate=True)
            else:  # the user went on after the endpoint, or another burst of a candidate
                self._continue_turn(turn, audio_ms, was_active)
            return
        if turn is None:
            self._begin_turn(audio_ms, out, candidate=False)
        else:
            self._continue_turn(turn, audio_ms, was_active)

    def _revived(self, event: ev.Transcript) -> _Turn | None:
        """The candidate given up as noise, if this late final shows it had words after all:
        dropping it would lose what the user said (asked over the end of a reply, say)."""
        turn, self._given_up = self._given_up, None
        if turn is None or turn.speech_end_ms is None or self._speech_active:
            return None
        if not words(event.text) or self._now - turn.speech_end_ms > self.config.late_final_ms:
            return None
        return turn

    def _begin_turn(self, audio_ms: float, out: list[ev.Action], *, candidate: bool) -> None:
        self._turn = _Turn(start_ms=audio_ms, candidate=candidate)
        self._given_up = None
        out.append(ev.BeginUserTurn(audio_ms))

    def _continue_turn(self, turn: _Turn, audio_ms: float, was_active: bool) -> None:
        # A pause inside the user's own turn teaches the endpointer; a candidate's does not.
        if not was_active and turn.speech_end_ms is not None and not turn.candidate:
            self.endpointer.observe_pause(audio_ms - turn.speech_end_ms)  # they went on
        turn.final, turn.prosody = False, None

    def _on_speech_ended(self, event: ev.SpeechEnded) -> None:
        if not self._speech_active:
            return  # the start was ignored (echo), so is its end
        self._speech_active = False
        if self._turn:
            self._turn.speech_end_ms = _finite(event.audio_ms, self._now)
            self._turn.final = False

    def _on_transcript(self, event: ev.Transcript, out: list[ev.Action]) -> None:
        if self._turn is None and event.final:
            self._turn = self._revived(event)
        turn, gen = self._turn, self._gen
        if turn is None:
            return  # speech we did not listen to (echo, barge-in off)
        end = turn.speech_end_ms
        is_final = event.final and not self._speech_active and end is not None
        if is_final and end is not None and 0 < event.audio_end_ms < end - STALE_FINAL_TOLERANCE_MS:
            is_final = False  # decoded before the user went on; a newer final is coming
        if not is_final and turn.final and not self._speech_active:
            return  # a late partial must not replace the final
        turn.text, turn.final = event.text, is_final
        turn.text_end_ms = _finite(event.audio_end_ms, 0.0)
        new_words = gen is not None and normalize(event.text) != normalize(gen.user_text)
        if gen and self._hold == "resume":
            if new_words and words(event.text):
                turn.endpointed = False
                self._drop(gen, out, "user_resumed", "endpoint_premature")
            elif is_final:
                self._resume(out)
        elif gen and not gen.speculative and turn.candidate:
            if self._sounds_like_our_reply(gen, event.text):
                # Our own words came back (the acoustic guard missed it): never a barge-in.
                if is_final:
                    out.append(ev.Metric("echo_transcript", gen.id, event.text))
                    self._turn = None
                    self._resume(out)
            elif not is_backchannel(event.text):
                self._barge_in(gen, turn, out)
            elif is_final:
                if self._hold:  # not yet counted by the no-words timer
                    name = "backchannel" if words(event.text) else "false_interruption"
                    out.append(ev.Metric(name, gen.id, event.text))
                self._turn = None
                self._resume(out)
        elif gen and gen.speculative and new_words:
            self._drop(gen, out, "speculation_missed", "speculation_wasted")
        elif gen and turn.endpointed and is_final and new_words and not gen.user_committed:
            # The endpoint used a late final's partial; nothing is heard yet, so answer the
            # final instead.
            self._drop(gen, out, "final_differs", "speculation_wasted")
            self._answer(turn, out)
        elif turn.candidate and is_final and is_backchannel(event.text):
            self._turn = None  # "mm-hmm" as the reply ended: not a turn of its own

    @staticmethod
    def _sounds_like_our_reply(gen: _Generation, text: str) -> bool:
        """The transcript is a run of the words the agent has just played."""
        said = words(text)
        upto = words(heard_text(gen.clauses, gen.played_ms + ECHO_LOOKAHEAD_MS))
        older = len(words(heard_text(gen.clauses, gen.played_ms - ECHO_LOOKBACK_MS)))
        recent = upto[max(0, older - 1) :]  # a word of slack at the edge
        n = len(said)
        if n == 0:
            return False
        runs = [recent[i : i + n] for i in range(len(recent) - n + 1)]
        if n == 1:  # one word: only exactly ("stop" must not pass for "top")
            return said in runs
        # The recognizer mangles its own echo ("the heast" for "the east"): a run of two or
        # more words that reads almost the same is our voice too.
        text = " ".join(said)
        return any(_similar(" ".join(run), text) >= ECHO_TEXT_SIMILARITY for run in runs)

    def _barge_in(self, gen: _Generation, turn: _Turn, out: list[ev.Action]) -> None:
        out.append(ev.Metric("barge_in", gen.id))
        self._finish(gen, out, interrupted=True, cancel="barge_in")
        turn.candidate = False  # the user has the floor now, whatever they say next

    # ---- generations -----------------------------------------------------------------------

    def _on_generation_event(self, event: _GenerationEvent, out: list[ev.Action]) -> None:
        gen = self._gen
        if gen is None or event.generation != gen.id:
            return  # stale: a cancelled or finished generation
        match event:
            case ev.LlmDelta():
                gen.has_text = gen.has_text or bool(event.text.strip())
            case ev.LlmDone():
                gen.llm_done = True
            case ev.TtsAudio():
                gen.clauses.append((event.text, max(0.0, _finite(event.audio_ms, 0.0))))
                self._maybe_audible(out)
            case ev.PlaybackProgress() if not gen.speculative:
                gen.played_ms = max(gen.played_ms, _finite(event.played_ms, 0.0))
            case ev.PlaybackDone() if not gen.speculative:
                gen.played_ms = math.inf  # all of it was heard
                self._finish(gen, out, interrupted=False, cancel=None)

    def _start(self, text: str, *, speculative: bool, out: list[ev.Action]) -> _Generation:
        gen = _Generation(self._next_id, text, speculative, due_ms=self._now)
        self._next_id += 1
        self._gen = gen
        out.append(ev.StartGeneration(gen.id, text, speculative))
        return gen

    def _maybe_audible(self, out: list[ev.Action]) -> None:
        gen = self._gen
        if gen and not gen.speculative and not gen.paused and not gen.audible and gen.clauses:
            gen.audible = True
            self._seal_user_turn(gen, out)

    def _seal_user_turn(self, gen: _Generation, out: list[ev.Action]) -> None:
        """The answer is heard (or cancelled): the user's turn goes into the history."""
        if gen.user_committed:
            return
        gen.user_committed = True
        if words(gen.commit_text):
            out.append(ev.CommitUserTurn(gen.commit_text))
        if self._turn and self._turn.endpointed:
            self._turn = None
            if self._speech_active:  # they are talking again: a new turn from that speech
                self._begin_turn(self._segment_start_ms, out, candidate=True)

    def _finish(
        self, gen: _Generation, out: list[ev.Action], *, interrupted: bool, cancel: str | None
    ) -> None:
        """End a generation that answers the user: commit exactly what was heard."""
        if cancel:
            out.append(ev.StopPlayback(gen.id))  # first: silence before bookkeeping
        self._seal_user_turn(gen, out)
        heard = heard_text(gen.clauses, gen.played_ms)
        out.append(ev.CommitAssistantTurn(gen.id, heard, interrupted))
        if cancel:
            out.append(ev.CancelGeneration(gen.id, cancel))
        self._gen, self._hold = None, None

    def _drop(self, gen: _Generation, out: list[ev.Action], reason: str, metric: str) -> None:
        """Discard a generation nobody heard (speculation, or an answer the user talked into)."""
        if not gen.speculative:
            out.append(ev.StopPlayback(gen.id))
        out.append(ev.CancelGeneration(gen.id, reason))
        out.append(ev.Metric(metric, gen.id, reason))
        self._gen, self._hold = None, None

    def _resume(self, out: list[ev.Action]) -> None:
        gen, self._hold = self._gen, None
        if gen and gen.paused:
            gen.paused = False
            out.append(ev.ResumePlayback(gen.id))
            self._maybe_audible(out)

    # ---- turns -------------------------------------------------------------------------------

    def _answer(self, turn: _Turn, out: list[ev.Action]) -> None:
        """The user's turn is over: promote the matching speculation or start an answer."""
        turn.endpointed = True
        # Answered, it is the user's turn, not a candidate to barge into a reply: else its own
        # late final would "barge in" on its answer, and the question would go unanswered.
        turn.candidate = False
        gen = self._gen
        if gen and not gen.speculative:
            self._finish(gen, out, interrupted=True, cancel="superseded")
            gen = None
        if gen and normalize(gen.user_text) == normalize(turn.text):
            gen.speculative, gen.due_ms = False, self._now
            out.append(ev.PromoteGeneration(gen.id))
            out.append(ev.Metric("speculation_hit", gen.id))
        else:
            if gen:
                self._drop(gen, out, "speculation_missed", "speculation_wasted")
            gen = self._start(turn.text, speculative=False, out=out)
        gen.commit_text = turn.text
        self._maybe_audible(out)
        self._settle_empty(out)

    def _settle_empty(self, out: list[ev.Action]) -> None:
        """An answer whose LLM finished without a word ends now: there is nothing to play."""
        gen = self._gen
        if gen and not gen.speculative and gen.llm_done and not gen.has_text:
            if not gen.clauses and self._hold is None:
                out.append(ev.Metric("empty_reply", gen.id))
                self._finish(gen, out, interrupted=False, cancel=None)

    def _on_response_requested(self, event: ev.ResponseRequested, out: list[ev.Action]) -> None:
        gen, turn = self._gen, self._turn
        if gen and gen.speculative:
            self._drop(gen, out, "superseded", "speculation_wasted")
        elif gen:
            self._finish(gen, out, interrupted=True, cancel="superseded")
        voice = ""
        if turn and words(turn.text) and not (turn.candidate and is_backchannel(turn.text)):
            voice = turn.text
        self._turn = None
        out.append(ev.EndOfTurn(self._now, self._now, voice or (event.text or "")))
        new = self._start(voice, speculative=False, out=out)
        new.commit_text = voice
        self._seal_user_turn(new, out)  # asked for explicitly: nothing left to merge into

    def _on_time(self, out: list[ev.Action]) -> None:
        c, now, gen, turn = self.config, self._now, self._gen, self._turn
        if gen and not gen.speculative:
            held_ms = now - self._hold_since_ms
            # Feedback words and the user still talking: let the final decide ("yeah, but").
            talking = self._speech_active and turn is not None and bool(words(turn.text))
            if (
                self._hold == "reply"
                and held_ms >= c.resume_after_ms
                and (not talking or held_ms >= c.max_hold_ms)
            ):
                out.append(ev.Metric("false_interruption", gen.id, "no words"))
                self._resume(out)  # the candidate stays open: late words still barge in
            if turn and turn.speech_end_ms is not None and not self._speech_active:
                if (
                    (turn.candidate or self._hold == "resume")
                    and not turn.final
                    and (now - turn.speech_end_ms >= c.asr_final_wait_ms)
                ):
                    if turn.candidate:
                        self._turn = None  # no words ever came: noise, unless a late final
                        self._given_up = turn  # brings some (`_revived`)
                    self._resume(out)
            if self._gen and not self._gen.audible and self._hold is None:
                if now - self._gen.due_ms >= c.stall_ms:
                    out.append(ev.Metric("generation_stalled", self._gen.id))
                    self._finish(self._gen, out, interrupted=True, cancel="stalled")
            self._settle_empty(out)
            return  # the agent holds the floor: no endpointing until it yields
        if turn is None or turn.endpointed:
            return
        if self._speech_active:
            if now - turn.start_ms >= c.max_user_turn_ms:
                self._split_turn(turn, out)
            return
        end = turn.speech_end_ms
        if end is None:
            return
        silence = now - end
        final_due = turn.final or silence >= c.asr_final_wait_ms
        if not words(turn.text) or (turn.candidate and turn.final and is_backchannel(turn.text)):
            # Wait long for a late final before calling it noise: dropping loses real words.
            if turn.final or silence >= c.endpoint.max_silence_ms:
                out.append(ev.Metric("noise_ignored", None, turn.text))
                if gen:
                    self._drop(gen, out, "no_words", "speculation_wasted")
                self._turn = None
            return
        if not c.auto_respond:
            return
        threshold = self.endpointer.silence_threshold_ms(turn.text, turn.prosody)
        if final_due and silence >= threshold:
            out.append(ev.EndOfTurn(now, end, turn.text))
            if not turn.final:
                out.append(ev.Metric("degraded", None, "asr_final:use_last_partial"))
            self._answer(turn, out)
        elif c.speculate and gen is None and turn.final and silence >= c.speculative_silence_ms:
            self._start(turn.text, speculative=True, out=out)

    def _split_turn(self, turn: _Turn, out: list[ev.Action]) -> None:
        """A monologue longer than the ASR window: keep what was said, listen on."""
        if self._gen:
            self._drop(self._gen, out, "user_turn_split", "speculation_wasted")
        if words(turn.text):
            out.append(ev.CommitUserTurn(turn.text))
        out.append(ev.Metric("user_turn_split", None, f"{self._now - turn.start_ms:.0f}ms"))
        restart = turn.text_end_ms if turn.text_end_ms > turn.start_ms else self._now
        self._begin_turn(restart, out, candidate=False)

    def _derive_state(self) -> ev.TurnState:
        gen = self._gen
        if gen and not gen.speculative:
            if self._hold:
                return ev.TurnState.INTERRUPTED
            return ev.TurnState.SPEAKING if gen.audible else ev.TurnState.THINKING
        return ev.TurnState.USER_SPEAKING if self._turn else ev.TurnState.LISTENING
