"""The simulated user: speaks a script into a link in real time and listens like a person.

Mic frames go out every 20 ms on the wall clock (silence or room noise between utterances);
reply audio is "played" as it would be, and speech_started stops that playback. The moment
the user's speech ends is known exactly from the script, so client-side latency is exact.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import numpy as np

from cadence.bench import links as ln
from cadence.bench.playback import MERGE_GAP_S, Interval, PacedPlayer, PushedPlayer
from cadence.bench.records import TurnRecord, matches, word_error_rate
from cadence.bench.scenarios import Script, Utterance, noise_rms
from cadence.bench.scenes import sign_pixels
from cadence.bench.voices import make_noise

RATE = 16_000
FRAME = 320  # 20 ms at 16 kHz
FRAME_S = FRAME / RATE
REPLY_TIMEOUT_S = 20.0  # no reply audio this long after the end of speech: unanswered
REPLY_DONE_TIMEOUT_S = 60.0  # a reply still unfinished this long after it started
MAX_WAIT_S = 45.0  # the longest the next utterance waits for the previous reply to settle
OBSERVE_S = 1.5  # after a backchannel, how long to watch whether the agent carries on
RESUME_GRACE_S = 0.8  # Realtime has no resume event: unpause if no cancel comes this soon
NOISE_LOOP_S = 20.0
CAMERA_EVERY_FRAMES = 25  # the camera shows a picture every 0.5 s
AUDIO_GRACE_S = 3.0  # a finished reply whose audio has not arrived by then never will
REPLY_KINDS = ("question", "barge_in")


@dataclass
class Reply:
    key: str
    created: float
    first_audio: float | None = None
    text: str = ""
    done: float | None = None
    status: str = ""
    latency: dict[str, object] = field(default_factory=dict)


@dataclass
class CueRun:
    index: int
    utterance: Utterance
    start_sample: int
    speech_start: float | None = None  # wall clock (perf_counter)
    speech_end: float | None = None
    replies: list[str] = field(default_factory=list)
    heard: str | None = None
    agent_speaking: bool | None = None
    new_response_after: bool = False
    errors: list[str] = field(default_factory=list)

    @property
    def end_sample(self) -> int:
        return self.start_sample + len(self.utterance.samples)


class SimulatedUser:
    def __init__(
        self,
        link: ln.Link,
        script: Script,
        utterances: list[Utterance],
        *,
        first_speech_at: float | None = None,
    ) -> None:
        self.link = link
        self.script = script
        self.utterances = utterances
        self.first_speech_at = first_speech_at
        self.player: PushedPlayer | PacedPlayer = PacedPlayer() if link.paced else PushedPlayer()
        self.runs: list[CueRun] = []
        self.replies: dict[str, Reply] = {}
        self.errors: list[str] = []
        self.lateness: list[float] = []
        self._idle_since: float | None = None
        self._paused_at: float | None = None
        self._speech_stopped: float | None = None
        self._last_created = 0.0
        self._hints = False  # the link tells us when to resume (in-process)
        self._link_gone = False
        self._t0 = 0.0
        # The camera's picture, drawn before timing starts (a sign for the visual scenario).
        self._picture = sign_pixels(script.sign) if script.sign else None

    # ---- running -------------------------------------------------------------------------

    async def run(self) -> list[TurnRecord]:
        async with asyncio.TaskGroup() as group:
            listener = group.create_task(self._listen(), name="bench-user-listen")
            try:
                await self._speak()
            finally:
                listener.cancel()
        return self.records()

    async def _speak(self) -> None:
        script = self.script
        noise = make_noise(int(NOISE_LOOP_S * RATE), script.noise, seed=script.seed)
        noise *= noise_rms(script)
        pending = list(range(len(script.cues)))
        active: CueRun | None = None
        self._t0 = time.perf_counter()
        deadline = self._t0 + len(script.cues) * (MAX_WAIT_S + REPLY_DONE_TIMEOUT_S)
        if self.first_speech_at is not None:
            deadline += max(0.0, self.first_speech_at - self._t0)
        k = 0
        while True:
            due = self._t0 + (k + 1) * FRAME_S
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.perf_counter()
            self._track_idle(now)
            if active is None and pending and self._ready(pending[0], now):
                i = pending.pop(0)
                active = CueRun(i, self.utterances[i], k * FRAME)
                self.runs.append(active)
            if self._picture is not None and k % CAMERA_EVERY_FRAMES == 0:
                await self.link.show(self._picture)
            frame = self._frame(noise, k, active)
            handoff = time.perf_counter()
            if active is not None:
                self._mark_speech(active, k, handoff)
            await self.link.send_audio(frame)
            self.lateness.append(handoff - due)
            if active is not None and (k + 1) * FRAME >= active.end_sample:
                active = None
            self._maybe_resume(now)
            k += 1
            if not pending and active is None and self._finished(now):
                return
            if self._link_gone:
                return  # the connection ended; the error it gave is in the records
            if now > deadline:
                self.errors.append(
                    f"trial stopped after {now - self._t0:.0f} s: replies never settled"
                )
                return

    def _frame(self, noise: np.ndarray, k: int, active: CueRun | None) -> np.ndarray:
        start = (k * FRAME) % len(noise)
        frame = np.resize(noise[start : start + FRAME], FRAME).astype(np.float32)
        if active is not None:
            a = k * FRAME - active.start_sample
            speech = active.utterance.samples[a : a + FRAME]
            frame[: len(speech)] += speech
        return frame

    def _mark_speech(self, run: CueRun, k: int, handoff: float) -> None:
        """Place the voiced span on the wall clock: frame k's last sample left at `handoff`."""
        frame_end = (k + 1) * FRAME  # in samples, so no float rounding can skip a boundary
        start = run.start_sample + round(run.utterance.voiced_start_s * RATE)
        end = run.start_sample + round(run.utterance.voiced_end_s * RATE)
        if run.speech_start is None and start < frame_end:
            run.speech_start = handoff - (frame_end - start) / RATE
            run.agent_speaking = self.player.playing(run.speech_start)
        if run.speech_end is None and end <= frame_end:
            run.speech_end = handoff - (frame_end - end) / RATE

    # ---- when to speak and when to stop --------------------------------------------------

    def _settled(self, reply: Reply, now: float) -> bool:
        """Generated and heard: done, and its audio arrived (paced audio lags the events)."""
        if reply.done is None:
            return False
        return reply.first_audio is not None or now > reply.done + AUDIO_GRACE_S

    def _track_idle(self, now: float) -> None:
        last = self._final_reply(self.runs[-1]) if self.runs else None
        if self.player.busy(now) or (last is not None and not self._settled(last, now)):
            self._idle_since = None
        elif self._idle_since is None:
            self._idle_since = now

    def _ready(self, index: int, now: float) -> bool:
        cue = self.script.cues[index]
        if cue.start == "begin":
            at = self.first_speech_at if self.first_speech_at is not None else self._t0
            return now >= at + cue.delay_s
        prev = self.runs[-1]
        reply = self._final_reply(prev)
        assert prev.speech_end is not None
        # A server that never lets the reply settle must not hold the script forever.
        stuck = now > prev.speech_end + MAX_WAIT_S
        timed_out = stuck or (reply is None and now > prev.speech_end + REPLY_TIMEOUT_S)
        if cue.start == "during_reply":
            started = reply.first_audio if reply is not None else None
            if started is not None and now >= started + cue.delay_s:
                return True
            finished = reply is not None and reply.done is not None and not self.player.busy(now)
            return timed_out or (started is not None and finished)
        if cue.pace_s is not None:
            asked = next(r.speech_start for r in reversed(self.runs) if r.speech_start)
            if now < asked + cue.pace_s:
                return False
        idle = self._idle_since is not None and now >= self._idle_since + cue.delay_s
        return timed_out or (reply is not None and idle)

    def _finished(self, now: float) -> bool:
        for i, run in enumerate(self.runs):
            if run.speech_end is None:
                return False
            kind = self.script.cues[run.index].kind
            if kind == "backchannel" and now < run.speech_end + OBSERVE_S:
                return False
            if kind not in REPLY_KINDS or i < len(self.runs) - 1:
                continue  # earlier replies were settled before the next cue (or cut by it)
            reply = self._final_reply(run)
            if reply is None or reply.status == "cancelled":
                # A cancelled reply may be followed by another one (a false endpoint).
                if now <= run.speech_end + REPLY_TIMEOUT_S:
                    return False
            elif not self._settled(reply, now) and now <= reply.created + REPLY_DONE_TIMEOUT_S:
                return False
        return True

    # ---- listening -----------------------------------------------------------------------

    async def _listen(self) -> None:
        async for event in self.link.events():
            await self._on_event(event)
        self._link_gone = True

    async def _on_event(self, event: ln.ClientEvent) -> None:
        player = self.player
        match event:
            case ln.ResponseCreated():
                self._created(event.key, event.t)
            case ln.AudioIn():
                reply = self.replies.get(event.key) or self._created(event.key, event.t)
                if reply.first_audio is None:
                    reply.first_audio = event.t
                if isinstance(player, PushedPlayer):
                    player.on_audio(event.key, event.item, event.ms, event.t)
                    if self._speech_stopped and self._paused_at and not self._hints:
                        player.resume(event.key, event.t)  # more audio after a pause: go on
            case ln.PacedFrame():
                self._paced(event)
            case ln.ReplyText():
                if (known := self.replies.get(event.key)) is not None:
                    known.text += event.text
            case ln.ResponseDone():
                reply = self.replies.get(event.key) or self._created(event.key, event.t)
                reply.done, reply.status, reply.latency = event.t, event.status, event.latency
                reply.text = event.text or reply.text
                if event.status == "cancelled" and isinstance(player, PushedPlayer):
                    player.stop(event.key, event.t)
            case ln.SpeechStarted():
                await self._user_speech_detected(event.t)
            case ln.SpeechStopped():
                self._speech_stopped = event.t
            case ln.Transcript():
                run = self._latest_run(event.t, unheard=True)
                if run is not None:
                    run.heard = event.text
            case ln.PlaybackHint():
                self._hints = True
                if isinstance(player, PushedPlayer):
                    if event.command == "resume":
                        player.resume(event.key, event.t)
                    elif event.command == "stop":
                        player.stop(event.key, event.t)
            case ln.ServerError():
                run = self._latest_run(event.t)
                (run.errors if run is not None else self.errors).append(event.message)

    async def _user_speech_detected(self, t: float) -> None:
        """INTERFACES "What played means": stop playing and tell the server what was heard."""
        player = self.player
        if not isinstance(player, PushedPlayer) or player.key is None:
            return
        played = player.pause(t)
        if played is not None:
            self._paused_at, self._speech_stopped = t, None
            await self.link.truncate(player.key, player.item, played)

    def _maybe_resume(self, now: float) -> None:
        player = self.player
        if self._hints or not isinstance(player, PushedPlayer) or self._paused_at is None:
            return
        stopped = self._speech_stopped
        if stopped is None or now < stopped + RESUME_GRACE_S:
            return
        if player.key is not None and self._last_created < self._paused_at:
            player.resume(player.key, now)  # no cancel, no new reply: it was a backchannel
        self._paused_at = None

    def _paced(self, event: ln.PacedFrame) -> None:
        player = self.player
        assert isinstance(player, PacedPlayer)
        new_run = player.last_loud is None or event.t - player.last_loud >= MERGE_GAP_S
        player.on_frame(event.loud, event.t)
        if not (event.loud and new_run):
            return
        # Paced audio carries no response id: a new run of speech belongs to the newest reply
        # that has not been heard yet (response.created travels faster than the media).
        waiting = [r for r in self.replies.values() if r.created <= event.t]
        if waiting and waiting[-1].first_audio is None:
            waiting[-1].first_audio = event.t

    def _created(self, key: str, t: float) -> Reply:
        reply = self.replies[key] = Reply(key, t)
        self._last_created = t
        run = self._latest_run(t)
        if run is not None:
            run.replies.append(key)
            if self.script.cues[run.index].kind == "backchannel":
                run.new_response_after = True
        return reply

    def _latest_run(self, t: float, *, unheard: bool = False) -> CueRun | None:
        for run in reversed(self.runs):
            if run.speech_start is not None and run.speech_start <= t:
                if not unheard or run.heard is None:
                    return run
        return None

    def _final_reply(self, run: CueRun) -> Reply | None:
        """The reply that counts: the last one not cancelled, else the last one."""
        replies = [self.replies[k] for k in run.replies]
        for reply in reversed(replies):
            if reply.status != "cancelled":
                return reply
        return replies[-1] if replies else None

    # ---- results -------------------------------------------------------------------------

    def records(self) -> list[TurnRecord]:
        now = time.perf_counter()
        intervals = self.player.intervals(now)
        late_ms = max(self.lateness, default=0.0) * 1000.0
        out = [self._record(i, run, intervals, late_ms) for i, run in enumerate(self.runs)]
        for index in range(len(self.runs), len(self.script.cues)):
            # Never said (the connection ended first): still a turn, unanswered.
            cue = self.script.cues[index]
            rec = self._blank(index, late_ms, ["the trial ended before this was said"])
            rec.correct = matches(cue.expect, None)
            out.append(rec)
        out[0].errors[:0] = self.errors
        return out

    def _blank(self, index: int, late_ms: float, errors: list[str]) -> TurnRecord:
        cue, script = self.script.cues[index], self.script
        return TurnRecord(
            script.scenario,
            script.session,
            script.trial,
            index,
            cue.kind,
            cue.voice,
            cue.speed,
            script.snr_db,
            cue.text,
            cue.expect,
            mic_late_ms=round(late_ms, 1),
            errors=errors,
        )

    def _record(self, i: int, run: CueRun, intervals: list[Interval], late_ms: float) -> TurnRecord:
        cue = self.script.cues[run.index]
        reply = self._final_reply(run)
        rec = self._blank(run.index, late_ms, list(run.errors))
        rec.heard, rec.wer = run.heard, word_error_rate(cue.text, run.heard)
        if cue.kind in REPLY_KINDS and reply is not None:
            rec.reply, rec.status, rec.server = reply.text, reply.status, dict(reply.latency)
            rec.false_starts = max(0, len(run.replies) - 1)
            first = reply.first_audio
            rec.answered = first is not None
            if first is not None and run.speech_end is not None:
                if first < run.speech_end:
                    rec.talked_over = True  # not a latency: the agent spoke over the user
                else:
                    rec.v2v_ms = round((first - run.speech_end) * 1000.0, 1)
        rec.correct = matches(cue.expect, rec.reply)
        if cue.kind != "question" and run.speech_start is not None:
            s = run.speech_start
            # Paced frames arrive every 20 ms: the last one before s may end just before it.
            slack = 2 * FRAME_S if self.link.paced else 0.0
            live = [iv for iv in intervals if iv.start <= s <= iv.end + slack]
            rec.agent_was_speaking = bool(live) or bool(run.agent_speaking)
            if cue.kind == "barge_in" and live:
                rec.barge_in_stop_ms = round(max(0.0, live[-1].end - s) * 1000.0, 1)
        if cue.kind == "backchannel" and i > 0:
            before = self._final_reply(self.runs[i - 1])
            cancelled = before is not None and before.status == "cancelled"
            rec.continued = not cancelled and not run.new_response_after
            if reply is not None:  # the agent took the backchannel as a turn: keep what it said
                rec.reply, rec.status = reply.text, reply.status
        return rec
