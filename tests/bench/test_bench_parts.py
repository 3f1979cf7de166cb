"""Targets, Realtime event parsing, scenario scripts and the players' notion of "playing"."""

from __future__ import annotations

import base64
import json

import pytest

from cadence.bench import links as ln
from cadence.bench.playback import Interval, PacedPlayer, PushedPlayer, merged
from cadence.bench.scenarios import build_script, paced, resolve
from cadence.errors import ConfigError


@pytest.mark.parametrize(
    ("spec", "kind", "url"),
    [
        ("ws://127.0.0.1:8000", "ws", "ws://127.0.0.1:8000/v1/realtime"),
        ("ws://h:1/", "ws", "ws://h:1/v1/realtime"),
        (
            "wss://api.example.com/v1/realtime?model=x",
            "ws",
            "wss://api.example.com/v1/realtime?model=x",
        ),
        ("webrtc://127.0.0.1:8000", "webrtc", "http://127.0.0.1:8000/v1/realtime/calls"),
        ("webrtcs://h", "webrtc", "https://h/v1/realtime/calls"),
    ],
)
def test_targets(spec: str, kind: str, url: str) -> None:
    target = ln.parse_target(spec, "tok")
    assert (target.kind, target.url, target.token) == (kind, url, "tok")


def test_inproc_and_bad_targets() -> None:
    assert ln.parse_target("inproc").kind == "inproc"
    for bad in ("http://h:1", "localhost:8000", "ws://"):
        with pytest.raises(ConfigError, match="unknown target"):
            ln.parse_target(bad)


def test_realtime_events_become_client_events() -> None:
    pcm = bytes(4800)  # 100 ms at 24 kHz
    delta = {
        "type": "response.output_audio.delta",
        "response_id": "r1",
        "item_id": "i1",
        "delta": base64.b64encode(pcm).decode(),
    }
    audio = ln.parse_realtime(delta, 1.0)
    assert isinstance(audio, ln.AudioIn) and audio.ms == pytest.approx(100.0)
    assert (audio.key, audio.item) == ("r1", "i1")
    latency = {"v2v": 365, "endpoint": 180}
    done = ln.parse_realtime(
        {
            "type": "response.done",
            "response": {
                "id": "r1",
                "status": "completed",
                "output": [{"content": [{"type": "output_audio", "transcript": "Paris."}]}],
                "metadata": {"latency": json.dumps(latency)},
            },
        },
        2.0,
    )
    assert done == ln.ResponseDone(2.0, "r1", "completed", "Paris.", latency)
    plain = ln.parse_realtime({"type": "response.done", "response": {"id": "r2"}}, 3.0)
    assert isinstance(plain, ln.ResponseDone) and plain.latency == {}
    assert ln.parse_realtime({"type": "input_audio_buffer.speech_started"}, 4.0) == (
        ln.SpeechStarted(4.0)
    )
    assert ln.parse_realtime({"type": "session.updated"}, 5.0) is None
    err = ln.parse_realtime({"type": "error", "error": {"code": "x", "message": "bad"}}, 6.0)
    assert err == ln.ServerError(6.0, "x: bad")


def test_all_runs_what_exists_and_lists_the_rest() -> None:
    run, skipped = resolve("all")
    assert {"single", "multi-turn", "barge-in", "backchannel", "noisy"} <= set(run)
    assert set(run) | set(skipped) == {
        "single",
        "multi-turn",
        "barge-in",
        "backchannel",
        "noisy",
        "visual",
        "tools",
    }
    assert all(reason for reason in skipped.values())
    with pytest.raises(ConfigError, match="unknown scenario"):
        resolve("single,telepathy")


def test_scripts_are_deterministic_and_vary_across_trials() -> None:
    assert build_script("single", trial=0) == build_script("single", trial=0)
    trials = [build_script("single", trial=k) for k in range(12)]
    assert len({(s.cues[0].voice, s.cues[0].speed, s.cues[0].text) for s in trials}) > 4
    noisy = [build_script("noisy", trial=k).snr_db for k in range(12)]
    assert len(set(noisy)) > 1 and max(noisy) <= 15
    multi = build_script("multi-turn", trial=0)
    assert [c.start for c in multi.cues] == ["begin", "after_reply", "after_reply"]
    assert len({c.voice for c in multi.cues}) == 1  # one speaker per conversation
    barge = build_script("barge-in", trial=0)
    assert [c.kind for c in barge.cues] == ["question", "barge_in"]
    assert barge.cues[1].start == "during_reply" and barge.cues[1].expect
    import random

    paced_multi = paced(multi, random.Random(0))
    assert all(6 <= c.pace_s <= 10 for c in paced_multi.cues[1:] if c.pace_s is not None)


def test_visual_scripts_show_a_sign_and_expect_its_words() -> None:
    import re

    scripts = [build_script("visual", trial=k) for k in range(8)]
    assert all(s.sign for s in scripts) and len({s.sign for s in scripts}) > 1
    for s in scripts:
        [ask] = s.cues
        assert ask.expect and re.search(ask.expect, f"The sign says {s.sign}.", re.IGNORECASE)
    assert build_script("single", trial=0).sign is None


def test_pushed_player_pauses_resumes_and_underruns() -> None:
    p = PushedPlayer()
    p.on_audio("r", "i", 1000.0, 10.0)  # 1 s of audio at t=10
    assert p.playing(10.5) and not p.playing(11.1)
    assert p.pause(10.4) == pytest.approx(400.0)
    assert not p.playing(10.5) and p.busy(10.5)
    p.resume("r", 11.0)
    assert p.playing(11.5) and not p.playing(11.7)
    p.on_audio("r", "i", 500.0, 12.0)  # arrives after an underrun: a silent gap, then more
    assert p.playing(12.2)
    ivs = p.intervals(13.0)
    assert [(round(i.start, 2), round(i.end, 2)) for i in ivs] == [
        (10.0, 10.4),
        (11.0, 11.6),
        (12.0, 12.5),
    ]
    p.stop("r", 12.1)
    p.on_audio("r", "i", 500.0, 12.2)  # flushed: never played
    assert not p.playing(12.3)


def test_paced_player_joins_frames_into_runs() -> None:
    p = PacedPlayer()
    for k in range(10):
        p.on_frame(True, 1.0 + 0.02 * k)
    p.on_frame(False, 1.3)
    p.on_frame(True, 2.0)
    assert [(round(i.start, 2), round(i.end, 2)) for i in p.intervals(3.0)] == [
        (0.98, 1.18),
        (1.98, 2.0),
    ]
    assert p.playing(1.2) and not p.playing(1.6)
    assert merged([Interval(0, 1, "a"), Interval(1.1, 2, "a"), Interval(2.1, 3, "b")]) == [
        Interval(0, 2, "a"),
        Interval(2.1, 3, "b"),
    ]
