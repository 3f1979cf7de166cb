"""A conversation: wires VAD → ASR → TurnController → LLM → chunker → TTS → playout.

The session owns the conversation's tasks and nothing global. It stamps every event with
its clock, feeds the sans-I/O TurnController, executes the actions it returns and reports
what happened as `SessionOutput`s through `events()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from cadence.agent import events as ev
from cadence.agent import outputs as out
from cadence.agent.budgets import LatencyRecord, StageBudgets
from cadence.agent.clock import Clock, MonotonicClock
from cadence.agent.generation import Generation, GenerationCallbacks, run_generation
from cadence.agent.history import History
from cadence.agent.playout import Playout
from cadence.agent.runtime import Runtime
from cadence.agent.sight import SessionVision
from cadence.agent.stalls import StallWatch, stalled_error
from cadence.agent.tool_decision import DecisionOptions
from cadence.agent.tool_turn import ToolTurns
from cadence.agent.tools import ToolRegistry, ToolSpec
from cadence.agent.turns import TurnConfig, TurnController
from cadence.agent.utterance import UtteranceBuffer
from cadence.audio.asr import AsrResult
from cadence.audio.chunk import AudioChunk, StreamResampler
from cadence.audio.echo import EchoGuard
from cadence.audio.prosody import ProsodyFeatures, analyze_prosody
from cadence.audio.vad import VAD_RATE, VoiceActivityDetector
from cadence.config import Profile
from cadence.errors import CadenceError
from cadence.llm.audio_modes import build_user_turn
from cadence.llm.base import ChatMessage
from cadence.video.frames import VideoFrame

log = logging.getLogger(__name__)

TICK_MS = 20.0
PARTIAL_INTERVAL_MS = 400.0
MAX_UTTERANCE_S = 30.0
ECHO_SETTLE_MS = 500.0  # how long after playback starts an unknown echo delay defers barge-in
NO_ECHO_AFTER_MS = 1500.0  # this much played without an echo path found: the device has none
OUTPUT_QUEUE_SIZE = 4096


@dataclass(frozen=True)
class SessionOptions:
    output_rate: int = 24_000
    turn_detection: bool = True  # False: manual turns (commit + response.create)
    auto_tick: bool = True  # False: the driver calls `tick()` (offline runs)


class Session:
    """One user's conversation. Create, `start()`, push audio/text, read `events()`, `close()`."""

    def __init__(
        self,
        runtime: Runtime,
        profile: Profile | None = None,
        *,
        options: SessionOptions | None = None,
        clock: Clock | None = None,
        tools: ToolRegistry | None = None,
    ) -> None:
        self.runtime = runtime
        self.profile = profile or Profile()
        self.options = options or SessionOptions()
        self.clock: Clock = clock or MonotonicClock()
        self.budgets = StageBudgets.from_dict(dict(self.profile.budgets))
        self.controller = TurnController(TurnConfig.from_dict(dict(self.profile.turns)))
        self.history = History()
        self.playout = Playout()
        self.echo = EchoGuard()
        self.vision = SessionVision(self.profile, runtime.llm)
        self._vad = VoiceActivityDetector(runtime.vad)
        self._resampler: StreamResampler | None = None
        self._audio_end_s = 0.0  # input audio timeline (seconds of 16 kHz audio received)
        self._utterance = UtteranceBuffer(max_turn_s=MAX_UTTERANCE_S)
        self._echo_segment = False  # the VAD segment in progress was judged our own echo
        self._echo_checked_ms = 0.0
        self._segment_start_ms = 0.0
        self._playback_started_ms = 0.0
        self._echo_free_device = False
        self._last_partial_ms = -1e9
        self._asr_request: tuple[bool, np.ndarray, float] | None = None
        self._asr_wakeup = asyncio.Event()
        self._asr_running = False
        self._generations: dict[int, Generation] = {}
        self._reference = np.zeros(0, np.float32)  # audible generation's audio at 16 kHz
        self._records: dict[int, LatencyRecord] = {}
        self._unheard_errors: dict[int, out.SessionError] = {}  # of speculative replies
        self._pending_anchor: tuple[float, float] | None = None  # (speech end, endpoint) ms
        self._last_final_ms: float | None = None
        self._turn: _HeardTurn | None = None  # the latest final transcript with its audio
        self._outputs: asyncio.Queue[out.SessionOutput | None] = asyncio.Queue(OUTPUT_QUEUE_SIZE)
        self._tasks: list[asyncio.Task[Any]] = []
        self._closed = False
        self.metrics: dict[str, int] = {}
        self._cancel_reasons: dict[int, str] = {}  # of the actions being executed
        # Server tools: the `tools` registry, else the profile's `tools` (imported functions).
        self.tools = ToolTurns(
            tools if tools is not None else ToolRegistry.from_config(self.profile.tools),
            DecisionOptions.from_dict(dict(self.profile.llm.get("tool_calling", {}))),
            runtime.llm,
            history=self.history,
            now_ms=self.clock.now_ms,
            emit=self._emit,
            records=self._records,
            budget_ms=self.budgets.tool_ms,
        )
        self.stalls = StallWatch(lambda: self.controller.config, self._holding_phrase)

    # ---- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._asr_worker(), name="asr"))
        if self.options.auto_tick:
            self._tasks.append(asyncio.create_task(self._ticker(), name="ticker"))
        self._emit(out.StateUpdate("listening"))
        if self.profile.greeting:
            self.say(self.profile.greeting)

    async def close(self) -> None:
        """Cancel every task of the session and end `events()`."""
        if self._closed:
            return
        self._closed = True
        tasks = self._tasks + [g.task for g in self._generations.values() if g.task]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for gen in self._generations.values():
            self.tools.settle(gen, "session_closed")
        self._generations.clear()
        with contextlib.suppress(asyncio.QueueFull):
            self._outputs.put_nowait(None)

    async def __aenter__(self) -> Session:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def events(self) -> AsyncIterator[out.SessionOutput]:
        while (item := await self._outputs.get()) is not None:
            yield item

    # ---- inputs ----------------------------------------------------------------------

    def push_audio(self, chunk: AudioChunk) -> None:
        """Feed microphone audio of any rate and channel count, in arrival order."""
        if self._closed:
            return
        mono = chunk.mono().float32()
        if self._resampler is None or self._resampler.in_rate != mono.sample_rate:
            self._resampler = StreamResampler(mono.sample_rate, VAD_RATE)
        audio = self._resampler.process(mono.samples[:, 0])
        now = self.clock.now_ms()
        self._audio_end_s += len(audio) / VAD_RATE
        self._utterance.append(audio, now)
        self.echo.push_mic(audio)
        for vad_event in self._vad.process(audio):
            self._on_vad(vad_event.kind, self._audio_to_clock(vad_event.t_s, now), now)
        self._recheck_echo(now)
        self._maybe_partial(now)
        self._feed(ev.VoiceProbability(now, self._vad.probability))

    def set_turn_detection(self, enabled: bool) -> None:
        """Server-side turns (True), or manual ones: commit + `request_response()` (False).
        The controller then never answers on its own, even from a partial transcript."""
        self.options = replace(self.options, turn_detection=enabled)
        self.controller.config = replace(self.controller.config, auto_respond=enabled)

    def set_instructions(self, instructions: str) -> None:
        self.profile = self.profile.with_instructions(instructions)

    def add_history_item(self, role: str, text: str) -> None:
        """A message the client adds to the conversation without asking for a reply."""
        if role == "user":
            self.history.add_user(text)
        elif role == "assistant":
            self.history.add_assistant(text)

    def push_frame(self, frame: VideoFrame) -> None:
        """A camera or screen frame (the buffer keeps a few, dropping the oldest)."""
        self.vision.push_frame(frame)

    def add_image(self, data: bytes) -> None:
        """A still image from the client (PNG/JPEG); a bad one is an error event."""
        try:
            self.vision.add_image(data, self.clock.now_ms() / 1000.0)
        except CadenceError as exc:
            self._emit(out.SessionError(exc.code, exc.message))

    def add_user_text(self, text: str) -> None:
        """A typed user message: goes into the history and asks for a reply."""
        self.history.add_user(text)
        self._emit(out.UserTurnCommitted(text))
        self.request_response(text=text)

    def request_response(self, text: str | None = None) -> None:
        self._pending_anchor = None
        self._feed(ev.ResponseRequested(self.clock.now_ms(), text))

    def commit_audio(self) -> None:
        """Manual turns: the buffered utterance is complete; transcribe it now."""
        self._request_final(self.clock.now_ms())

    def clear_audio(self) -> None:
        self._utterance.clear()

    def cancel_response(self) -> None:
        self._feed(ev.CancelRequested(self.clock.now_ms()))

    def add_function_output(self, call_id: str, output: str) -> None:
        """A client's `function_call_output`; `InputError` for an unknown or answered call.
        Ask for the spoken answer with `request_response()` (Realtime `response.create`)."""
        self.tools.add_function_output(call_id, output)

    def set_tools(self, tools: list[ToolSpec], tool_choice: object = None) -> None:
        """Client-declared tools (replacing earlier ones) and the tool choice, as a Realtime
        `session.update` sets them; the client runs these and answers with their output."""
        self.tools.set_client_tools(tools, tool_choice)

    def report_played(self, generation: int, played_ms: float) -> None:
        """A client played only this much of a generation (Realtime truncate)."""
        self.playout.report_played(generation, played_ms)

    def say(self, text: str) -> None:
        """Speak `text` as the assistant (a greeting): it goes through the normal playout."""
        self._pending_anchor = None
        self._feed(ev.ResponseRequested(self.clock.now_ms(), None), scripted=text)

    def tick(self) -> None:
        now = self.clock.now_ms()
        self._watch_answer(now)
        gen = self.playout.generation
        if gen is not None:
            played = self.playout.advance(now)
            self._learn_echo_free()
            self._feed(ev.PlaybackProgress(now, gen, played))
            g = self._generations.get(gen)
            if g and g.finished and self.playout.remaining_ms <= 0:
                self.playout.stop()
                self._feed(ev.PlaybackDone(now, gen))
        self._feed(ev.Tick(now))

    def _watch_answer(self, now: float) -> None:
        """The answer in progress: a holding phrase when it is slow to start, a stop when a
        stage stalls (agent/stalls.py); failed with nothing to play, it ends at once."""
        gen = self._generations.get(self.controller.generation or -1)
        if gen is None or gen.cancelled or not gen.started_response:
            return
        audible = self.playout.generation == gen.generation
        self.stalls.check(gen, self._records.get(gen.generation), now, audible=audible)
        if gen.finished and gen.error and not audible:
            self._feed(ev.PlaybackDone(now, gen.generation))

    def _holding_phrase(self) -> str:
        return self.tools.options.holding_phrase

    @property
    def asr_busy(self) -> bool:
        """A transcription is requested or running."""
        return self._asr_request is not None or self._asr_running

    @property
    def generation_finished(self) -> bool:
        """The audible generation has synthesized all its audio."""
        gen = self._generations.get(self.playout.generation or -1)
        return gen is None or gen.finished

    # ---- VAD and ASR -----------------------------------------------------------------

    def _audio_to_clock(self, t_s: float, now: float) -> float:
        """Map an input-audio time to the session clock: the newest sample arrived `now`."""
        return now - (self._audio_end_s - t_s) * 1000.0

    def _on_vad(self, kind: str, audio_ms: float, now: float) -> None:
        if kind == "start":
            self._segment_start_ms = audio_ms
            self._echo_checked_ms = now
            echo = self._echo_likelihood()
            self._echo_segment = self._echo_undecided(now) or (
                echo >= self.controller.config.echo_threshold
            )
            if self._echo_segment:
                # Our own voice (or not yet known): nobody started talking, so clients are
                # not told; the controller hears of it for its echo metrics only.
                if not self._echo_undecided(now):
                    self._feed(ev.SpeechStarted(now, audio_ms, echo))
                return
            self._user_started(now, audio_ms, echo)
        else:
            self._echo_segment = False
            self._emit(out.UserSpeechStopped(audio_ms))
            self._feed(ev.SpeechEnded(now, audio_ms))
            if self.options.turn_detection and self.controller.user_turn_open:
                self._request_final(audio_ms)

    def _user_started(self, now: float, audio_ms: float, echo: float) -> None:
        self._emit(out.UserSpeechStarted(audio_ms))
        self._feed(ev.SpeechStarted(now, audio_ms, echo))

    def _echo_likelihood(self) -> float:
        return self.echo.likelihood() if self.playout.generation is not None else 0.0

    def _echo_undecided(self, now: float) -> bool:
        """Just after the agent starts talking, its echo may reach the mic before the echo
        guard has seen enough of it to find the delay: wait a little before judging."""
        if self.playout.generation is None or self.echo.delay_ms is not None:
            return False
        return not self._echo_free_device and now - self._playback_started_ms < ECHO_SETTLE_MS

    def _learn_echo_free(self) -> None:
        """Played this long and no echo path ever appeared: a headset, or a browser with echo
        cancellation. Barge-in is then never deferred for this session."""
        if self.echo.delay_ms is None and self.playout.played_ms > NO_ECHO_AFTER_MS:
            self._echo_free_device = True

    def _recheck_echo(self, now: float) -> None:
        """The VAD stays in one segment while echo runs on: if the user starts talking over
        it, only a fresh look at the echo guard notices, so look again every few frames."""
        interval = 40.0 if self.echo.delay_ms is None else 100.0
        if (
            not (self._echo_segment and self._vad.speaking)
            or now - self._echo_checked_ms < interval
        ):
            return
        self._echo_checked_ms = now
        echo = self._echo_likelihood()
        if echo < self.controller.config.echo_threshold and not self._echo_undecided(now):
            self._echo_segment = False
            self._user_started(now, self._segment_start_ms, echo)

    def _request_final(self, audio_end_ms: float) -> None:
        audio = self._utterance.audio()
        if audio is not None:
            self._asr_request = (True, audio, audio_end_ms)  # a final replaces a pending partial
            self._asr_wakeup.set()

    def _maybe_partial(self, now: float) -> None:
        if not self._vad.speaking or not self.controller.user_turn_open:
            return
        if now - self._last_partial_ms < PARTIAL_INTERVAL_MS or self._asr_request is not None:
            return
        if (audio := self._utterance.audio()) is None:
            return
        self._last_partial_ms = now
        self._asr_request = (False, audio, now)
        self._asr_wakeup.set()

    async def _asr_worker(self) -> None:
        while True:
            await self._asr_wakeup.wait()
            self._asr_wakeup.clear()
            request, self._asr_request = self._asr_request, None
            if request is None:
                continue
            final, audio, audio_end_ms = request
            self._asr_running = True
            try:
                job = self._final_job if final else self._partial_job
                result, prosody = await asyncio.to_thread(job, audio)
            except CadenceError as exc:
                self._emit(out.SessionError(exc.code, exc.message))
                continue
            finally:
                self._asr_running = False
            now = self.clock.now_ms()
            if final:
                self._last_final_ms = now
                self._turn = _HeardTurn(result.text, audio, prosody)
                if prosody is not None and (cue := prosody.to_cue(now)) is not None:
                    self._feed(cue)
            self._emit(out.UserTranscript(result.text, final))
            self._feed(ev.Transcript(now, result.text, final, audio_end_ms))

    def _partial_job(self, audio: np.ndarray) -> tuple[AsrResult, ProsodyFeatures | None]:
        return self.runtime.asr.transcribe(audio), None

    def _final_job(self, audio: np.ndarray) -> tuple[AsrResult, ProsodyFeatures | None]:
        """Transcript and prosody of a finished utterance, in one trip to a worker thread."""
        return self.runtime.asr.transcribe(audio), analyze_prosody(audio, VAD_RATE)

    # ---- the controller --------------------------------------------------------------

    def _feed(self, event: ev.Event, *, scripted: str | None = None) -> None:
        try:
            actions = self.controller.handle(event)
        except Exception:  # the controller must never raise; keep the session alive if it does
            log.exception("turn controller failed on %r", event)
            self._emit(out.SessionError("server_error", "turn controller failed"))
            return
        # A commit precedes its cancel: its tool calls are settled with the cancel's reason.
        self._cancel_reasons = {
            a.generation: a.reason for a in actions if isinstance(a, ev.CancelGeneration)
        }
        for action in actions:
            self._execute(action, scripted)

    def _execute(self, action: ev.Action, scripted: str | None) -> None:
        now = self.clock.now_ms()
        match action:
            case ev.BeginUserTurn():
                self._utterance.begin(action.audio_ms)
                self._last_final_ms = None
            case ev.EndOfTurn():
                self._pending_anchor = (action.speech_end_ms, action.t_ms)
            case ev.StartGeneration():
                self._start_generation(action, scripted)
            case ev.PromoteGeneration():
                self._promote(action.generation, now)
            case ev.CancelGeneration():
                self._cancel(action.generation, action.reason)
            case ev.PausePlayback():
                if self.playout.generation == action.generation:
                    self.playout.pause(now)
                    self.echo.clear_reference_from()
                    self._emit(out.PlaybackControl(action.generation, "pause"))
            case ev.ResumePlayback():
                if self.playout.generation == action.generation:
                    self.playout.resume(now)
                    # what is still to be played will come back through the mic again
                    played = int(self.playout.played_ms * VAD_RATE / 1000)
                    self.echo.push_reference(self._reference[played:])
                    self._emit(out.PlaybackControl(action.generation, "resume"))
            case ev.StopPlayback():
                if self.playout.generation == action.generation:
                    self.playout.advance(now)
                    self.playout.stop()
                    self.echo.clear_reference_from()
                self._emit(out.PlaybackControl(action.generation, "stop"))
            case ev.CommitUserTurn():
                self.tools.close_pending_client_calls()
                self.history.add_user(action.text)
                self._utterance.clear()
                self._emit(out.UserTurnCommitted(action.text))
            case ev.CommitAssistantTurn():
                self._settle_tools(action.generation, action.interrupted)
                self.history.add_assistant(action.text)
                self._emit(
                    out.AssistantTurnCommitted(
                        action.generation, action.text, action.interrupted, self.playout.played_ms
                    )
                )
                self._forget_if_finished(action.generation)
            case ev.StateChanged():
                state = action.state.value
                if state in ("user_speaking", "interrupted"):
                    state = "listening" if state == "user_speaking" else "speaking"
                self._emit(out.StateUpdate(state))
            case ev.Metric():
                self.metrics[action.name] = self.metrics.get(action.name, 0) + 1

    # ---- generations -----------------------------------------------------------------

    def _forget_if_finished(self, generation: int) -> None:
        """A committed reply whose task is done is history now; keeping it would grow a long
        session's memory by one reply (text, clauses, tool calls) per turn. One still
        running is dropped by the cancel that follows its commit."""
        gen = self._generations.get(generation)
        if gen is not None and gen.finished and self.playout.generation != generation:
            del self._generations[generation]

    def _settle_tools(self, generation: int, interrupted: bool) -> None:
        """Tool calls go into the history after the user turn, before the reply's words."""
        if (gen := self._generations.get(generation)) is None:
            return
        reason = self._cancel_reasons.get(generation) or (
            "failed" if gen.error else "interrupted" if interrupted else "ended"
        )
        self.tools.settle(gen, reason)

    def _start_generation(self, action: ev.StartGeneration, scripted: str | None) -> None:
        gen = Generation(action.generation, action.user_text, action.speculative)
        self._generations[gen.generation] = gen
        record = LatencyRecord(self.budgets, gen.generation)
        if not action.speculative:
            self._anchor(record)
        self._records[gen.generation] = record
        if not action.speculative:
            self._start_response(gen)
        messages = self._context(action.user_text)
        gen.task = asyncio.create_task(
            self._run(gen, messages, scripted), name=f"gen-{gen.generation}"
        )

    async def _see(self, gen: Generation, messages: list[ChatMessage]) -> list[ChatMessage]:
        """Add this turn's vision; a vision failure costs the frames, never the reply."""
        question = gen.user_text or next(
            (m.content for m in reversed(messages) if m.role == "user"), ""
        )
        try:
            seen, metrics = await self.vision.apply(question, messages)
        except CadenceError as exc:
            self._emit(out.SessionError(exc.code, exc.message))
            self._records[gen.generation].degrade(f"vision failed: {exc.code}")
            return messages
        if metrics and metrics.get("visual"):
            self._records[gen.generation].mark("vlm_first_token", self.clock.now_ms())
        return seen

    def _anchor(self, record: LatencyRecord) -> None:
        if self._pending_anchor is not None:
            speech_end, endpoint = self._pending_anchor
            record.anchor(speech_end)
            record.mark("endpoint", endpoint)
            if self._last_final_ms is not None:
                record.mark("asr_final", self._last_final_ms)
        else:  # response.create / typed text: measured from the request
            record.anchor(self.clock.now_ms())

    def _context(self, user_text: str) -> list[ChatMessage]:
        messages = self.history.messages()
        if user_text:
            latest = self._user_message(user_text)
            if messages and messages[-1].role == "user" and messages[-1].content == user_text:
                messages[-1] = latest  # committed already: send the model's richer version
            else:
                messages.append(latest)
        system = ChatMessage("system", self.profile.instructions)
        return self.history.fit(system, messages, self.runtime.llm)

    def _user_message(self, text: str) -> ChatMessage:
        """The user's turn as the model gets it in this session's mode (cascade, native,
        hybrid); typed text, or a transcript without its audio, is plain text."""
        heard = self._turn if self._turn is not None and self._turn.text == text else None
        mode = self.profile.mode
        # Hints help large models and confuse small ones (measured: SmolLM2-135M answered
        # 13 of 23 questions right with them, 18 without), so cascade leaves them off.
        hints = bool(self.profile.llm.get("prosody_hints", mode != "cascade"))
        if heard is None:
            return ChatMessage("user", text)
        audio = AudioChunk(heard.audio.reshape(-1, 1), VAD_RATE) if mode != "cascade" else None
        prosody = heard.prosody if hints else None
        return build_user_turn(mode, transcript=text, audio=audio, prosody=prosody).for_model

    async def _run(
        self, gen: Generation, messages: list[ChatMessage], scripted: str | None
    ) -> None:
        callbacks = GenerationCallbacks(
            on_delta=self._on_delta,
            on_clause=self._on_clause,
            on_audio=self._on_audio,
            on_llm_done=self._on_llm_done,
        )
        llm = _ScriptedLLM(scripted) if scripted is not None else self.runtime.llm
        try:
            writer = None
            if scripted is None:
                messages = await self._see(gen, messages)
                writer = self.tools.writer(gen, messages)
            await run_generation(
                gen,
                messages,
                llm,
                self.runtime.tts,
                self.options.output_rate,
                callbacks,
                writer=writer,
            )
        except CadenceError as exc:
            gen.error = exc.message
            self._report(gen, out.SessionError(exc.code, exc.message))
        except Exception:
            log.exception("generation %d failed", gen.generation)
            gen.error = "the reply failed"
            self._report(
                gen, out.SessionError("server_error", f"generation {gen.generation} failed")
            )
        gen.finished = True
        if gen.error:
            self._feed(ev.LlmDone(self.clock.now_ms(), gen.generation))
        if gen.started_response:
            self._finish_response(gen)

    def _report(self, gen: Generation, error: out.SessionError) -> None:
        """A speculative reply's failure is the client's business only if it becomes the
        answer: held until promoted, dropped with the speculation otherwise."""
        if gen.started_response:
            self._emit(error)
        else:
            self._unheard_errors[gen.generation] = error

    def _live(self, generation: int) -> Generation | None:
        gen = self._generations.get(generation)
        return None if gen is None or gen.cancelled else gen

    def _on_delta(self, generation: int, text: str) -> None:
        if (gen := self._live(generation)) is None:
            return
        self._records[generation].mark("llm_first_token", self.clock.now_ms())
        self._feed(ev.LlmDelta(self.clock.now_ms(), gen.generation, text))

    def _on_clause(self, generation: int, _text: str) -> None:
        if self._live(generation) is not None:
            self._records[generation].mark("first_clause", self.clock.now_ms())

    def _on_llm_done(self, generation: int) -> None:
        if self._live(generation) is not None:
            self._feed(ev.LlmDone(self.clock.now_ms(), generation))

    def _on_audio(self, generation: int, clause: str, audio: AudioChunk, first: bool) -> None:
        if (gen := self._live(generation)) is None:
            return
        now = self.clock.now_ms()
        self._records[generation].mark("tts_first_audio", now)
        self._feed(ev.TtsAudio(now, generation, clause, audio.duration_s * 1000.0))
        if gen.speculative and not gen.started_response:
            gen.held.append((clause, audio))
        else:
            self._release(gen, clause, audio, now)

    def _release(self, gen: Generation, clause: str, audio: AudioChunk, now: float) -> None:
        if self.playout.generation != gen.generation:
            self.playout.start(gen.generation, now)
            self._playback_started_ms = now
            self._reference = np.zeros(0, np.float32)
        self._records[gen.generation].mark("v2v", now)
        if clause:
            self._emit(out.ResponseText(gen.generation, clause))
        self.playout.add(gen.generation, audio.duration_s * 1000.0)
        reference = audio.to(VAD_RATE).mono_f32()
        self._reference = np.concatenate([self._reference, reference])
        self.echo.push_reference(reference)
        self._emit(out.ResponseAudio(gen.generation, audio))

    def _start_response(self, gen: Generation) -> None:
        gen.started_response = True
        gen.responding.set()
        self._emit(out.ResponseStarted(gen.generation))

    def _promote(self, generation: int, now: float) -> None:
        if (gen := self._live(generation)) is None:
            return
        self._anchor(self._records[generation])
        self._start_response(gen)
        held, gen.held = gen.held, []
        for clause, audio in held:
            self._release(gen, clause, audio, now)
        if (error := self._unheard_errors.pop(generation, None)) is not None:
            self._emit(error)
        if gen.finished:
            self._finish_response(gen)

    def _finish_response(self, gen: Generation) -> None:
        record = self._records.pop(gen.generation, None)
        latency = record.to_dict() if record else {}
        status = "failed" if gen.error else "completed"
        self._emit(out.ResponseDone(gen.generation, gen.text, status, latency, gen.error))

    def _cancel(self, generation: int, reason: str) -> None:
        self._unheard_errors.pop(generation, None)
        gen = self._generations.pop(generation, None)
        if gen is None:
            return
        self.tools.settle(gen, reason)  # calls of a reply nobody heard (no commit came)
        gen.cancelled = True
        gen.held.clear()
        if gen.task and not gen.task.done():
            gen.task.cancel()
        if self.playout.generation == generation:
            self.playout.stop()
        record = self._records.pop(generation, None)
        if gen.started_response and not gen.finished:
            latency = record.to_dict() if record else {}
            if reason == "stalled":  # no audio stall_ms after it was due: a failure, not a cancel
                error = stalled_error(gen, self.controller.config.stall_ms)
                self._emit(out.SessionError(error.code, error.message))
                self._emit(out.ResponseDone(generation, gen.text, "failed", latency, error.message))
                return
            self._emit(out.ResponseDone(generation, gen.text, "cancelled", latency, reason))

    # ---- plumbing --------------------------------------------------------------------

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK_MS / 1000.0)
            self.tick()

    def _emit(self, item: out.SessionOutput) -> None:
        if self._closed:
            return
        try:
            self._outputs.put_nowait(item)
        except asyncio.QueueFull:
            # A consumer that stopped reading must not grow memory without bound.
            log.warning("session output queue full; dropping %s", type(item).__name__)


@dataclass(frozen=True)
class _HeardTurn:
    text: str
    audio: np.ndarray  # 16 kHz mono float32
    prosody: ProsodyFeatures | None


class _ScriptedLLM:
    """Speaks fixed text (a greeting) through the same pipeline as model replies."""

    name = "scripted"
    context_window = 1 << 30

    def __init__(self, text: str) -> None:
        self._text = text

    async def stream(self, messages: Any, options: Any = None) -> AsyncIterator[str]:
        yield self._text

    async def warm(self, system_prompt: str) -> None:
        return None

    def count_tokens(self, text: str) -> int:
        return len(text.split())
