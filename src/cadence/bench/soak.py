"""`cadence bench soak`: N spoken sessions for M minutes; the server's RSS, fds, threads, loop lag.

Every turn is kept with the last events the server sent for it, so a question left without
an answer is reported with what happened to it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cadence.bench.server_process import (
    LagSample,
    ProcessSample,
    growth,
    parse_loop_lag,
    sample_process,
    started_server,
)

QUESTIONS = ("What is the capital of France?", "How many days are in a week?", "Say hello.")
CHUNK_S = 0.1  # the mic sends 100 ms appends at real time
CHUNK_BYTES = int(24_000 * CHUNK_S) * 2
SILENCE = b"\0" * CHUNK_BYTES
TURN_TIMEOUT_S = 60.0  # after the question, to wait for its answer
END_GRACE_S = 20.0  # after the soak's time, for the turns in flight to be answered
PAUSE_S = 0.5  # after the reply has played, before the next question
BARGE_EVERY = 4  # every 4th question is asked at response.done, over the reply still playing
LAG_WINDOW_S = 61.0  # the server's lag quantiles cover its last 1200 wake-ups (~a minute)
EVENT_TAIL = 10  # events kept per turn (runs of one type count as one)


PENDING = "pending"
ANSWERED = "answered"


@dataclass
class TurnRecord:
    """One spoken question and what the server said about it (the last events, condensed)."""

    session: int
    number: int  # within its session, from 0
    started_s: float  # since the soak began
    question: str
    over_reply: bool  # asked at the previous response.done, while that reply still played
    outcome: str = PENDING
    heard: str = ""  # the server's final transcript of the question, if it committed one
    reply: str = ""
    cancelled: int = 0  # responses to this question that ended cancelled
    responses: set[str] = field(default_factory=set)  # created while this turn was current
    heard_speech: bool = False
    reply_audio_s: float = 0.0
    first_audio_at: float | None = None  # monotonic arrival of the reply's first audio
    events: deque[list[Any]] = field(default_factory=lambda: deque(maxlen=EVENT_TAIL))

    def note(self, event: dict[str, Any], t_s: float) -> None:
        """Record an event (runs of one type are counted, not repeated); settle the outcome."""
        kind = str(event.get("type", "?"))
        detail = ""
        if kind == "input_audio_buffer.speech_started":
            self.heard_speech = True
        elif kind == "conversation.item.input_audio_transcription.completed":
            self.heard = str(event.get("transcript", ""))
            detail = repr(self.heard)
        elif kind == "error":
            error = event.get("error") or {}
            detail = f"{error.get('code')}: {str(error.get('message'))[:80]}"
        elif kind == "response.created":
            self.responses.add(str((event.get("response") or {}).get("id")))
            if self.outcome == PENDING:  # the audio to wait out is the newest response's
                self.first_audio_at, self.reply_audio_s = None, 0.0
        elif kind == "response.output_audio.delta" and self.outcome == PENDING:
            if self.first_audio_at is None:
                self.first_audio_at = time.monotonic()
            self.reply_audio_s += len(base64.b64decode(event.get("delta", ""))) / (2 * 24_000)
        elif kind == "response.done":
            detail = self._done(event.get("response") or {})
        if self.events and self.events[-1][0] == kind and not detail:
            self.events[-1][1] += 1
        else:
            self.events.append([kind, 1, detail, t_s])

    def _done(self, response: dict[str, Any]) -> str:
        status = str(response.get("status"))
        reason = (response.get("status_details") or {}).get("reason")
        output = response.get("output") or [{}]
        content = (output[0].get("content") or [{}]) if output else [{}]
        transcript = str(content[0].get("transcript") or content[0].get("text") or "")
        mine = response.get("id") in self.responses
        if mine and self.outcome == PENDING:
            if status == "completed":
                self.reply = transcript
                self.outcome = ANSWERED if transcript.strip() else "empty reply"
            elif status == "cancelled":
                self.cancelled += 1  # another response normally follows (the user went on)
            else:
                self.outcome = f"response {status}"
        mark = "" if mine else " (an earlier turn's)"
        return f"{status}{f' ({reason})' if reason else ''}{mark} {transcript[:40]!r}"

    def give_up(self, cut_at_end: bool) -> None:
        """No answer in time: say how far the turn got."""
        if not self.heard_speech:
            self.outcome = "no speech_started"
        elif not self.responses:
            self.outcome = "no response"
        elif self.cancelled:
            self.outcome = f"{self.cancelled} response(s) cancelled, none completed"
        else:
            self.outcome = "response not done"
        if cut_at_end:
            self.outcome += " (cut at the end of the soak)"

    def describe(self) -> str:
        trail = ", ".join(
            f"{kind}{f'x{count}' if count > 1 else ''}{f' [{detail}]' if detail else ''} @{t:.1f}"
            for kind, count, detail, t in self.events
        )
        over = ", over the previous reply" if self.over_reply else ""
        return (
            f"session {self.session} turn {self.number} at {self.started_s:.1f} s{over}: "
            f"said {self.question!r}, heard {self.heard!r}: {self.outcome}; last events: {trail}"
        )


@dataclass
class SoakReport:
    samples: list[ProcessSample] = field(default_factory=list)
    lag: list[LagSample] = field(default_factory=list)
    turns_list: list[TurnRecord] = field(default_factory=list)
    errors: int = 0
    lost: list[str] = field(default_factory=list)  # why each lost session ended

    @property
    def finished(self) -> list[TurnRecord]:
        """Turns with an outcome (all, once the soak is over)."""
        return [t for t in self.turns_list if t.outcome != PENDING]

    @property
    def turns(self) -> int:
        return len(self.finished)

    @property
    def answered(self) -> int:
        return sum(t.outcome == ANSWERED for t in self.finished)

    @property
    def unanswered(self) -> list[TurnRecord]:
        return [t for t in self.finished if t.outcome != ANSWERED]

    @property
    def sessions_lost(self) -> int:
        return len(self.lost)

    def loop_lag(self) -> dict[str, float] | None:
        """The median one-minute p50, the worst one-minute p99 and the max, over the windows
        that lie within the run (not the server's start-up) when there are any, else all."""
        inside = [s for s in self.lag if s.t_s >= LAG_WINDOW_S]
        samples = inside or self.lag
        if not samples:
            return None
        return {
            "p50": float(np.median([s.p50 for s in samples])),
            "p99": max(s.p99 for s in samples),
            "max": max(s.max for s in samples),
            "within_run": float(bool(inside)),
        }

    def render(self) -> str:
        over = [t for t in self.finished if t.over_reply]
        lines = [
            f"soak: {self.turns} turns, {self.answered} answered "
            f"({sum(t.outcome == ANSWERED for t in over)} of {len(over)} asked over the previous "
            f"reply), {self.errors} error events, {self.sessions_lost} sessions lost"
        ]
        lines += [f"  LOST {why}" for why in self.lost]
        lines += [f"  UNANSWERED {t.describe()}" for t in self.unanswered]
        if (lag := self.loop_lag()) is not None:
            where = "within the run" if lag["within_run"] else "including the server's start"
            lines.append(
                f"server event-loop lag: p50 {lag['p50']:.2f} ms, p99 {lag['p99']:.2f} ms "
                f"(worst one-minute window), max {lag['max']:.1f} ms ({where})"
            )
        if self.samples:
            first, last = self.samples[0], self.samples[-1]
            g = growth(self.samples)
            lines.append(
                f"server RSS {first.rss_mb:.0f} -> {last.rss_mb:.0f} MiB "
                f"({g['rss_pct']:+.1f}% since the settled sample, the first after 1/6 of the "
                f"run), PSS {g['pss_pct']:+.1f}%, anonymous {g['anon_mb']:+.0f} MiB; "
                f"fds {first.fds} -> {last.fds}, threads {first.threads} -> {last.threads}"
            )
            for s in self.samples[:: max(1, len(self.samples) // 10)]:
                lines.append(
                    f"  t={s.t_s:7.1f} s  rss {s.rss_mb:7.1f} MiB  pss {s.pss_mb:7.1f} MiB  "
                    f"anon {s.anon_mb:7.1f} MiB  fds {s.fds}  th {s.threads}"
                )
        return "\n".join(lines)


class _Mic:
    """Sends 100 ms of audio per 100 ms of wall time, as a microphone would; never stops."""

    def __init__(self, ws: Any, listening: asyncio.Task[None]) -> None:
        self.ws = ws
        self.listening = listening
        self.next_at = time.monotonic()

    async def send(self, pcm: bytes) -> None:
        if self.listening.done():  # the connection ended: say why
            self.listening.result()
            raise ConnectionError("the server closed the session")
        chunk = base64.b64encode(pcm).decode()
        await self.ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
        self.next_at = max(self.next_at + CHUNK_S, time.monotonic() - 1.0)  # no catch-up burst
        await asyncio.sleep(max(0.0, self.next_at - time.monotonic()))

    async def say(self, pcm: bytes) -> None:
        for i in range(0, len(pcm), CHUNK_BYTES):
            await self.send(pcm[i : i + CHUNK_BYTES])

    async def quiet_until(self, deadline: float, done: Any = lambda: False) -> None:
        while not done() and time.monotonic() < deadline:
            await self.send(SILENCE)


async def _speaker(
    url: str, token: str | None, start: float, until: float, session: int, report: SoakReport
) -> None:
    """One client: asks a question in real time, waits for the reply (and for it to play,
    except before every BARGE_EVERY-th question), again until `until`; the mic never stops."""
    import websockets

    from cadence.bench.voices import synthesize

    headers = {"Authorization": f"Bearer {token}"} if token else None
    clips = [
        (q, synthesize(q, "espeak", seed=session).to(24_000, dtype="int16").to_pcm16_bytes())
        for q in QUESTIONS
    ]
    current: list[TurnRecord] = []

    async def listen(ws: Any) -> None:
        async for raw in ws:
            event = json.loads(raw)
            if event.get("type") == "error":
                report.errors += 1
            if current:
                current[-1].note(event, time.monotonic() - start)

    async with websockets.connect(url, additional_headers=headers, max_size=None) as ws:
        await ws.recv()  # session.created
        listening = asyncio.create_task(listen(ws), name=f"soak-listen-{session}")
        try:
            mic = _Mic(ws, listening)
            over_reply = False
            n = 0
            while time.monotonic() < until:
                question, pcm = clips[(session + n) % len(clips)]
                turn = TurnRecord(session, n, time.monotonic() - start, question, over_reply)
                current.append(turn)
                report.turns_list.append(turn)
                await mic.say(pcm)
                deadline = min(time.monotonic() + TURN_TIMEOUT_S, until + END_GRACE_S)
                await mic.quiet_until(deadline, lambda t=turn: t.outcome != PENDING)
                if turn.outcome == PENDING:
                    turn.give_up(cut_at_end=time.monotonic() >= until + END_GRACE_S)
                n += 1
                over_reply = n % BARGE_EVERY == BARGE_EVERY - 1
                if not over_reply and turn.first_audio_at is not None:
                    played_at = turn.first_audio_at + turn.reply_audio_s + PAUSE_S
                    await mic.quiet_until(min(played_at, until))
                del current[:-1]
        except Exception as exc:  # the session is lost: so is the question in flight
            if current and current[-1].outcome == PENDING:
                current[-1].outcome = f"session lost ({type(exc).__name__})"
            raise
        finally:
            listening.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listening


def _get(url: str, token: str | None = None) -> str:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as reply:
        return str(reply.read().decode())


async def _sessions_closed(url: str, within_s: float) -> None:
    """Wait until the server counts no live session (it notices closes a little later)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            health = json.loads(await asyncio.to_thread(_get, url + "/healthz"))
        except Exception:  # not a cadence server's /healthz: nothing to wait for
            return
        if not isinstance(health, dict) or not health.get("sessions"):
            return
        await asyncio.sleep(0.2)


async def run_soak(
    url: str,
    pid: int | None,
    sessions: int,
    minutes: float,
    token: str | None = None,
    sample_every_s: float = 5.0,
) -> SoakReport:
    """`sessions` speakers for `minutes` against `url`, sampling process `pid` meanwhile.

    No question starts after `minutes`; one in flight then gets END_GRACE_S to be answered.
    Every `sample_every_s` the server's RSS/fds/threads (when `pid` is given) and its
    event-loop lag (from /metrics) are recorded.
    """
    report = SoakReport()
    start = time.monotonic()
    until = start + minutes * 60.0
    base = url.rstrip("/")
    ws_url = base.replace("http", "ws", 1) + "/v1/realtime"

    async def lag_sample() -> None:
        with contextlib.suppress(Exception):  # an old server, or /metrics behind another token
            text = await asyncio.to_thread(_get, base + "/metrics", token)
            if (lag := parse_loop_lag(text, time.monotonic() - start)) is not None:
                report.lag.append(lag)

    async def sampler() -> None:
        while True:
            if pid is not None:
                report.samples.append(sample_process(pid, time.monotonic() - start))
            await lag_sample()
            await asyncio.sleep(sample_every_s)

    sampling = asyncio.create_task(sampler())
    results = await asyncio.gather(
        *(_speaker(ws_url, token, start, until, i, report) for i in range(sessions)),
        return_exceptions=True,
    )
    sampling.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sampling
    if minutes * 60.0 >= LAG_WINDOW_S - 1.0:  # let the last lag window lie within the run
        await asyncio.sleep(max(0.0, start + LAG_WINDOW_S - time.monotonic()))
    await lag_sample()
    await _sessions_closed(base, 10.0)
    if pid is not None:
        report.samples.append(sample_process(pid, time.monotonic() - start))
    report.lost = [
        f"session {i}: {type(r).__name__}: {r}"
        for i, r in enumerate(results)
        if isinstance(r, BaseException)
    ]
    return report


async def soak_command(args: Any) -> int:
    """Exit 1 when a session was lost, a turn went unanswered, an error event came, or the
    started server's log has an exception."""
    problems: list[str] = []
    if args.target:
        report = await run_soak(args.target, None, args.sessions, args.minutes, args.token)
        print(report.render())
    else:
        async with started_server(args.config) as server:
            report = await run_soak(server.url, server.pid, args.sessions, args.minutes)
            problems, stalls = server.problems(), server.stalls()
        print(report.render())
        for line in problems[:20]:
            print(f"  SERVER {line}")
        if stalls:
            print(f"server log: {len(stalls)} event-loop stall(s) of 250 ms or more; the first:")
            print("\n".join(f"  {line}" for line in stalls[0]))
    failed = report.sessions_lost or report.unanswered or report.errors or problems
    return 1 if failed else 0


def add_soak_parser(commands: Any) -> None:
    soak = commands.add_parser(
        "soak",
        help="N spoken sessions for M minutes: every turn answered? server RSS, fds, threads "
        "and event-loop lag over time",
        description="N Realtime WebSocket speakers ask spoken questions at real time (every "
        "4th over the end of the previous reply) against a `cadence serve` started on "
        "127.0.0.1, or --target. Prints each unanswered turn with its events, the server's "
        "RSS/fds/threads from minute M/6 to the end, loop lag and stalls; exits 1 on an "
        "unanswered turn, an error event, a lost session or an exception in the server log.",
    )
    soak.add_argument("--sessions", type=int, default=4, help="concurrent speakers (4)")
    soak.add_argument("--minutes", type=float, default=30.0, help="may be a fraction (30)")
    soak.add_argument("--target", help="http://HOST:PORT of a running server (no sampling)")
    soak.add_argument("--token", default=None, help="bearer token for --target")
    soak.add_argument("--config", help="TOML config for the started server")
    soak.set_defaults(handler=soak_command)
