"""The echo guard on synthetic signals: the agent's voice coming back vs a user talking over it.

"Speech" here is a run of syllables: harmonic-rich tones with gliding pitch under a smooth
envelope, or envelope-shaped noise; two voices differ in pitch range and timing.
"""

from __future__ import annotations

import numpy as np
import pytest

from cadence.audio.echo import EchoGuard, EchoGuardConfig
from cadence.errors import AudioFormatError, ConfigError

SR = 16_000


def voice(seconds: float, seed: int, f0: tuple[float, float] = (100.0, 170.0)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.zeros(int(seconds * SR))
    pos = 0
    while pos < len(out):
        n = int(rng.uniform(0.08, 0.25) * SR)
        t = np.arange(n) / SR
        pitch = rng.uniform(*f0) * (1 + rng.uniform(-0.15, 0.15) * t / t[-1])  # a glide
        phase = 2 * np.pi * np.cumsum(pitch) / SR
        tone = sum(np.sin(k * phase + rng.uniform(0, 6)) / k for k in range(1, 16))
        out[pos : pos + n] += (np.sin(np.pi * np.arange(n) / n) ** 2 * tone)[: len(out) - pos]
        pos += n + int(rng.uniform(0.02, 0.12) * SR)
    return (0.3 * out / np.abs(out).max()).astype(np.float32)


def noise_voice(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    envelope = np.abs(np.sin(2 * np.pi * rng.uniform(3, 5) * np.arange(n) / SR)) ** 2
    return (0.2 * envelope * rng.standard_normal(n)).astype(np.float32)


def echo_of(ref: np.ndarray, delay_ms: float, gain: float) -> np.ndarray:
    d = int(delay_ms * SR / 1000)
    out = np.zeros(len(ref), np.float32)
    out[d:] = gain * ref[: len(ref) - d]
    return out


def guard_with(ref: np.ndarray, mic: np.ndarray, frame: int = 320) -> EchoGuard:
    """Reference from t=0; the mic arrives in 20 ms frames, as a session pushes it."""
    g = EchoGuard()
    g.push_reference(ref, 0.0)
    for i in range(0, len(mic), frame):
        g.push_mic(mic[i : i + frame], i / SR)
    return g


def likelihoods(g: EchoGuard, loud: np.ndarray, floor: float, win_s: float = 0.06) -> np.ndarray:
    """Likelihood over many 60 ms windows after 1.2 s where `loud` carries energy."""
    out = []
    for start in np.arange(1.2, len(loud) / SR - win_s, 0.04):
        a, b = int(start * SR), int((start + win_s) * SR)
        if np.sqrt(np.mean(loud[a:b] ** 2)) > floor:
            out.append(g.likelihood(start, start + win_s))
    assert len(out) > 10
    return np.array(out)


def room_noise(n: int, level: float = 0.003, seed: int = 9) -> np.ndarray:
    return (level * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


@pytest.mark.parametrize("delay_ms", [40.0, 120.0, 200.0, 280.0])
@pytest.mark.parametrize("make", [voice, noise_voice])
def test_delay_is_found(delay_ms: float, make) -> None:  # type: ignore[no-untyped-def]
    ref = make(3.0, 1)
    mic = echo_of(ref, delay_ms, 0.3) + room_noise(len(ref))
    g = guard_with(ref, mic)
    assert g.estimate_delay_ms() == pytest.approx(delay_ms, abs=1.0)


@pytest.mark.parametrize(("delay_ms", "gain"), [(40.0, 0.5), (120.0, 0.2), (200.0, 0.1),
                                                (150.0, -0.3)])  # fmt: skip
def test_echo_alone_is_recognised(delay_ms: float, gain: float) -> None:
    ref = voice(4.0, 2)
    echo = echo_of(ref, delay_ms, gain)
    g = guard_with(ref, echo + room_noise(len(ref)))
    values = likelihoods(g, echo, floor=0.01)  # voiced: 10 dB over the room noise
    assert np.median(values) > 0.9
    assert values.min() > 0.6  # the controller's threshold: echo never opens a barge-in


@pytest.mark.parametrize("tail_ms", [30.0, 80.0])
def test_echo_through_a_room_is_recognised(tail_ms: float) -> None:
    # A laptop: the direct path 10 dB over a reverberant tail that decays over `tail_ms`.
    rng = np.random.default_rng(0)
    n = int(4 * tail_ms * SR / 1000)
    room = rng.standard_normal(n) * np.exp(-np.arange(n) / (tail_ms * SR / 1000))
    room[0] = 0.0
    room *= np.sqrt(0.1 / np.sum(room**2))
    room[0] = 1.0
    ref = voice(4.0, 2)
    echo = np.convolve(echo_of(ref, 100.0, 0.3), room)[: len(ref)].astype(np.float32)
    g = guard_with(ref, echo + room_noise(len(ref)))
    assert g.estimate_delay_ms() == pytest.approx(100.0, abs=1.0)
    values = likelihoods(g, echo, floor=0.01)
    assert np.median(values) > 0.9 and np.percentile(values, 10) > 0.6


@pytest.mark.parametrize("user_gain_db", [0.0, 6.0, 12.0])
def test_user_over_echo_is_not_echo(user_gain_db: float) -> None:
    ref = voice(4.0, 3)
    echo = echo_of(ref, 120.0, 0.2)
    user = voice(4.0, 11, f0=(160.0, 260.0)) * 0.2 * 10 ** (user_gain_db / 20)
    g = guard_with(ref, echo + user + room_noise(len(ref)))
    values = likelihoods(g, user, floor=0.01)
    # The likelihood is the echo's share of the energy: a user as loud as the echo gets ~0.5.
    assert np.median(values) < {0.0: 0.55, 6.0: 0.3, 12.0: 0.12}[user_gain_db]


def test_likelihood_tracks_the_echo_share_of_energy() -> None:
    ref = voice(4.0, 4)
    echo = echo_of(ref, 90.0, 0.3)
    user = voice(4.0, 12, f0=(170.0, 250.0)) * 0.3
    g = guard_with(ref, echo + user + room_noise(len(ref)))
    errors = []
    for start in np.arange(1.2, 3.8, 0.03):
        a, b = int(start * SR), int((start + 0.06) * SR)
        e, u = float(np.sum(echo[a:b] ** 2)), float(np.sum(user[a:b] ** 2))
        if e + u > (b - a) * 1e-4:
            errors.append(g.likelihood(start, start + 0.06) - e / (e + u))
    assert np.mean(np.abs(errors)) < 0.06


def test_user_alone_while_agent_plays_into_headphones() -> None:
    ref = voice(3.0, 5)
    user = voice(3.0, 13, f0=(150.0, 240.0)) * 0.3
    g = guard_with(ref, user + room_noise(len(ref)))
    assert np.median(likelihoods(g, user, floor=0.01)) < 0.1


def test_no_reference_means_no_echo() -> None:
    user = voice(2.0, 6) * 0.3
    g = EchoGuard()
    for i in range(0, len(user), 320):
        g.push_mic(user[i : i + 320])  # no times: a contiguous stream from 0
    assert g.likelihood() == 0.0
    assert g.likelihood(0.5, 0.56) == 0.0
    assert g.delay_ms is None and g.estimate_delay_ms() is None


def test_defaults_look_at_the_newest_audio_and_queue_the_reference() -> None:
    ref = voice(3.0, 7)
    g = EchoGuard()
    g.push_mic(np.zeros(SR, np.float32))  # 1 s of silence before the agent speaks
    g.push_reference(ref[: SR // 2])  # starts "now", at 1.0 s
    g.push_reference(ref[SR // 2 :])  # queues behind the first part
    mic = echo_of(np.concatenate([np.zeros(SR, np.float32), ref]), 60.0, 0.3)
    for i in range(SR, len(mic), 320):
        g.push_mic(mic[i : i + 320])
    assert g.estimate_delay_ms() == pytest.approx(60.0, abs=1.0)
    values = [g.likelihood(s, s + 0.08) for s in np.arange(1.3, 3.8, 0.05)
              if np.sqrt(np.mean(mic[int(s * SR) : int((s + 0.08) * SR)] ** 2)) > 0.01]  # fmt: skip
    assert np.median(values) > 0.9


def test_reference_cleared_on_pause_no_longer_matches() -> None:
    ref = voice(3.0, 8)
    echo = echo_of(ref, 100.0, 0.3)
    g = guard_with(ref[: int(1.5 * SR)], echo[: int(1.5 * SR)])
    g.push_reference(ref[int(1.5 * SR) :], 1.5)
    g.clear_reference_from(1.5)  # paused at 1.5 s: the queued rest never played
    user = voice(1.0, 14, f0=(150.0, 240.0)) * 0.1
    for i in range(0, len(user), 320):
        g.push_mic(user[i : i + 320])
    assert g.likelihood() == 0.0


def test_delays_beyond_the_search_range_are_not_echo() -> None:
    ref = voice(3.0, 9)
    echo = echo_of(ref, 450.0, 0.3)
    g = guard_with(ref, echo + room_noise(len(ref)))
    assert np.median(likelihoods(g, echo, floor=0.01)) < 0.3  # a stated limit: 0-300 ms


def test_int16_and_column_audio_are_accepted() -> None:
    g = EchoGuard()
    g.push_reference((voice(1.0, 1) * 32767).astype(np.int16), 0.0)
    g.push_mic(np.zeros((320, 1), np.float32), 0.0)
    with pytest.raises(AudioFormatError):
        g.push_mic(np.zeros((320, 2), np.float32), 0.0)


def test_reset_forgets_everything() -> None:
    ref = voice(3.0, 2)
    g = guard_with(ref, echo_of(ref, 80.0, 0.3))
    assert g.estimate_delay_ms() is not None
    g.reset()
    assert g.delay_ms is None and g.likelihood(1.0, 1.1) == 0.0


def test_bad_config_is_refused() -> None:
    with pytest.raises(ConfigError):
        EchoGuardConfig(max_delay_ms=0)
    with pytest.raises(ConfigError):
        EchoGuardConfig(history_ms=500)


def test_arbitrary_pushes_and_queries_stay_in_range() -> None:
    rng = np.random.default_rng(3)
    g = EchoGuard()
    for _ in range(200):
        n = int(rng.integers(0, 2000))
        t = float(rng.uniform(-1.0, 20.0))
        samples = (rng.standard_normal(n) * rng.choice([0.0, 1e-4, 0.1, 5.0])).astype(np.float32)
        match int(rng.integers(0, 4)):
            case 0:
                g.push_reference(samples, t)
            case 1:
                g.push_mic(samples, t if rng.random() < 0.5 else None)
            case 2:
                g.clear_reference_from(t)
            case _:
                value = g.likelihood(t, t + float(rng.uniform(-0.1, 0.3)))
                assert 0.0 <= value <= 1.0
    assert 0.0 <= g.likelihood() <= 1.0


def test_a_long_reply_pushed_ahead_of_playback_is_still_recognised_as_echo() -> None:
    """TTS hands over seconds of audio at once, far ahead of the mic: the reference must keep
    its beginning until it is played (a ring written ahead would overwrite it)."""
    from cadence.bench.voices import synthesize

    rate, frame, delay = 16_000, 320, int(0.12 * 16_000)
    speech = synthesize(
        "The history of Paris is long and rich, and it began with a Celtic tribe "
        "on an island in the river Seine, long before the Romans came.",
        lead_silence_s=0.0,
    ).mono_f32()
    assert len(speech) > 4 * rate  # longer than the guard's 3 s of history
    guard = EchoGuard()
    guard.push_reference(speech)
    mic = np.zeros(len(speech) + delay, np.float32)
    mic[delay:] = 0.35 * speech
    mic += 0.003 * np.random.default_rng(3).standard_normal(len(mic)).astype(np.float32)
    scores = []
    for i in range(0, len(mic) - frame, frame):
        guard.push_mic(mic[i : i + frame])
        if i > rate // 2 and (i // frame) % 10 == 0:
            scores.append(guard.likelihood())
    assert min(scores) > 0.6, scores
