import numpy as np
import pytest

from cadence.audio.vad import VAD_RATE, VadConfig, VoiceActivityDetector
from cadence.errors import ConfigError


def voiced(seconds: float, f0: float = 140.0, seed: int = 0) -> np.ndarray:
    """A harmonic-rich, amplitude-modulated signal: webrtcvad takes it for a voice."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * VAD_RATE)) / VAD_RATE
    sig = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 12))
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)
    return (0.2 * sig * envelope + 0.002 * rng.standard_normal(t.size)).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * VAD_RATE), np.float32)


@pytest.mark.parametrize("frame_ms", [10, 20, 30])
def test_speech_start_and_end_are_stamped_on_the_audio_timeline(frame_ms: int):
    vad = VoiceActivityDetector(VadConfig(frame_ms=frame_ms))
    audio = np.concatenate([silence(0.5), voiced(1.0), silence(0.6)])
    events = vad.process(audio)
    assert [e.kind for e in events] == ["start", "end"]
    assert events[0].t_s == pytest.approx(0.5, abs=0.05)
    assert events[1].t_s == pytest.approx(1.5, abs=0.05)


def test_events_do_not_depend_on_how_the_audio_is_cut():
    audio = np.concatenate([silence(0.3), voiced(0.8), silence(0.5), voiced(0.4), silence(0.5)])
    whole = VoiceActivityDetector().process(audio)
    pieces = VoiceActivityDetector()
    cut = [e for i in range(0, len(audio), 333) for e in pieces.process(audio[i : i + 333])]
    assert whole == cut
    assert [e.kind for e in whole] == ["start", "end", "start", "end"]


def test_silence_and_very_quiet_noise_never_start_speech():
    rng = np.random.default_rng(1)
    quiet = (0.0005 * rng.standard_normal(VAD_RATE * 2)).astype(np.float32)
    vad = VoiceActivityDetector(VadConfig(aggressiveness=3))
    assert vad.process(np.concatenate([silence(1.0), quiet])) == []


def test_a_click_shorter_than_the_start_run_is_ignored():
    vad = VoiceActivityDetector(VadConfig(start_ms=60))
    assert vad.process(np.concatenate([silence(0.3), voiced(0.02), silence(0.3)])) == []


def test_silero_backend_detects_the_same_speech():
    vad = VoiceActivityDetector(VadConfig(backend="silero"))
    from cadence.bench.voices import synthesize

    speech = synthesize("Hello there, how are you today?").mono_f32()
    events = vad.process(np.concatenate([silence(0.5), speech, silence(0.8)]))
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end"


@pytest.mark.parametrize("bad", [{"frame_ms": 25}, {"aggressiveness": 4}, {"backend": "nope"}])
def test_bad_config_is_refused(bad: dict[str, object]):
    with pytest.raises(ConfigError):
        VadConfig(**bad)  # type: ignore[arg-type]
