"""Barge-in and echo with the real models, in real time: the agent stops when the user
talks, keeps only what was heard, answers the new question, and never hears itself."""

from __future__ import annotations

import re

import pytest

from cadence.agent import outputs as out
from cadence.agent.runtime import Runtime
from cadence.bench.voices import synthesize
from cadence.config import Profile
from conftest import Echo, LiveCall  # type: ignore[import-not-found]

pytestmark = pytest.mark.models

# A long answer to interrupt: the default persona answers in one short sentence.
TALKATIVE = Profile(
    instructions="You are a helpful assistant. Answer with a long, detailed explanation."
)


def _words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]", " ", text.lower()).split())


def _speaking_for(call: LiveCall, seconds: float) -> bool:
    return len(call.played) * 0.02 >= seconds


async def test_barge_in_stops_playback_keeps_what_was_heard_and_answers_the_new_question(
    runtime: Runtime,
) -> None:
    call = LiveCall(runtime, TALKATIVE)
    call.say(synthesize("Tell me about the history of Paris.", "piper"))
    interrupted = False

    def script(c: LiveCall) -> bool:
        nonlocal interrupted
        if not interrupted and _speaking_for(c, 1.5):
            c.say(synthesize("Stop. Tell me about Rome instead.", "piper", lead_silence_s=0.0))
            interrupted = True
        answers = c.of(out.AssistantTurnCommitted)
        return interrupted and bool(answers) and not answers[-1].interrupted

    await call.run(40.0, until=script)
    assert interrupted, "the agent never spoke long enough to be interrupted"
    commits = call.of(out.AssistantTurnCommitted)
    first, last = commits[0], commits[-1]
    done = {d.generation: d for d in call.of(out.ResponseDone)}
    # history holds only what was heard: a strict prefix of what was generated
    assert first.interrupted
    full = _words(done[first.generation].text) if first.generation in done else ""
    heard = _words(first.text)
    assert heard and (not full or (full.startswith(heard) and len(heard) < len(full)))
    # playback stopped soon after the user started talking
    barge_at = call.speech_starts[-1]
    last_of_first = max(t for t, g in call.played if g == first.generation)
    stop_ms = (last_of_first - barge_at) * 1000
    print(f"\n[barge-in] stop latency {stop_ms:.0f} ms (speech start -> last agent audio)")
    assert stop_ms < 1000
    # the history keeps the truncated reply, and the next reply is about Rome
    history = call.session.history.items
    assert any(m.role == "assistant" and _words(m.content) == heard for m in history)
    assert "rome" in _words(last.text) or "roman" in _words(last.text)


@pytest.mark.parametrize(("delay_ms", "gain"), [(40, 0.5), (200, 0.3)])
async def test_own_voice_coming_back_does_not_interrupt(
    runtime: Runtime, delay_ms: float, gain: float
) -> None:
    """No echo cancellation on the user's side: the agent hears itself, delayed 40-200 ms,
    attenuated, with room noise, and must not stop for it."""
    call = LiveCall(runtime, TALKATIVE, echo=Echo(delay_ms=delay_ms, gain=gain, noise_rms=0.003))
    call.say(synthesize("Tell me about the history of Paris.", "piper"))
    await call.run(30.0, until=lambda c: _speaking_for(c, 4.0))
    assert _speaking_for(call, 4.0), "the agent did not get to speak"
    kinds = out.UserSpeechStarted | out.UserTranscript
    heard = [o for _, o in call.outputs if isinstance(o, kinds)]
    assert not call.of(out.PlaybackControl), f"the agent interrupted itself on its echo: {heard}"
    assert not [a for a in call.of(out.AssistantTurnCommitted) if a.interrupted]


async def test_the_user_talking_over_the_echo_still_barges_in(runtime: Runtime) -> None:
    call = LiveCall(runtime, TALKATIVE, echo=Echo(delay_ms=60, gain=0.35, noise_rms=0.003))
    call.say(synthesize("Tell me about the history of Paris.", "piper"))
    said = False

    def script(c: LiveCall) -> bool:
        nonlocal said
        if not said and _speaking_for(c, 1.5):
            c.say(synthesize("Stop. Tell me about Rome instead.", "piper", lead_silence_s=0.0))
            said = True
        return said and any(p.command == "pause" for p in c.of(out.PlaybackControl))

    await call.run(30.0, until=script)
    assert said and any(p.command == "pause" for p in call.of(out.PlaybackControl))
