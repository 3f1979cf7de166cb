"""Benchmark scenarios: scripts of user speech with timing, drawn per trial from a seed.

Each trial gets its own voice, speed, loudness and noise, so no number rests on one sample;
the same seed always gives the same script. Rendering to audio happens before timing starts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from cadence.bench.voices import SAMPLE_RATE, NoiseKind, synthesize, voiced_mask
from cadence.errors import ConfigError

CueKind = Literal["question", "barge_in", "backchannel"]
# begin: the first cue; after_reply: once the previous reply has finished playing (a polite
# user); during_reply: while the previous reply is playing (an interruption or backchannel).
Start = Literal["begin", "after_reply", "during_reply"]

SCENARIOS = ("single", "multi-turn", "barge-in", "backchannel", "noisy", "visual", "tools")
# Piper (the agent's own kind of voice) half of the time; espeak variants differ in pitch,
# accent and timbre, which is what a recognizer trained on people struggles with.
VOICES = ("piper", "piper", "espeak:en-us", "espeak:en-us+f3", "espeak:en-gb+m3")
SPEEDS = (0.9, 1.0, 1.1, 1.2)
CLEAN_SNR_DB = 50.0  # a quiet mic's noise floor; real microphones never send digital zero
NOISY_SNR_DB = (15.0, 10.0, 5.0)
SPEECH_RMS_DBFS = (-26.0, -20.0)  # speaking level range, over the voiced part

# Questions with an answer SmolLM2-class models usually get right, and a regex that finds it.
QUESTIONS: tuple[tuple[str, str], ...] = (
    ("What is the capital of France?", r"\bparis\b"),
    ("How many days are in a week?", r"\b(seven|7)\b"),
    ("What color is the sky on a clear day?", r"\bblue\b"),
    ("What is two plus two?", r"\b(four|4)\b"),
    ("What is the largest planet in our solar system?", r"\bjupiter\b"),
    ("What do bees make?", r"\bhoney\b"),
    ("How many legs does a spider have?", r"\b(eight|8)\b"),
    ("What is frozen water called?", r"\bice\b"),
    ("What language do people speak in Spain?", r"\bspanish\b"),
    ("What is the opposite of hot?", r"\bcold\b"),
    ("What is the capital of Japan?", r"\btokyo\b"),
    ("Which animal is called the king of the jungle?", r"\blions?\b"),
)
# Requests whose replies run long enough (several seconds) to be interrupted.
LONG_REQUESTS = (
    "Tell me a long story about a brave little robot.",
    "Tell me a story about a dragon who learns to fly.",
    "Describe a beautiful day at the beach in detail.",
    "Tell me a long story about a cat who goes to the moon.",
)
INTERRUPTIONS: tuple[tuple[str, str], ...] = (
    ("Wait, stop. What is the capital of Italy?", r"\brome\b"),
    ("Sorry, stop please. What color is grass?", r"\bgreen\b"),
    ("Hold on. How many hours are in a day?", r"\b(twenty[- ]?four|24)\b"),
)
BACKCHANNELS = ("Mm-hmm.", "Uh-huh.", "Okay.", "Right.", "Yeah.")
# Signs the simulated camera shows, and a regex that finds the sign's words in a reply.
SIGNS: tuple[tuple[str, str], ...] = (
    ("OPEN 24 HOURS", r"open\W+(24|twenty[- ]?four)\W+hours"),
    ("NO PARKING", r"no\W+parking"),
    ("FRESH COFFEE", r"fresh\W+coffee"),
    ("WET PAINT", r"wet\W+paint"),
    ("EMERGENCY EXIT", r"emergency\W+exit"),
)
SIGN_QUESTIONS = ("What does the sign say?", "What is written on the sign?", "Read the sign to me.")


@dataclass(frozen=True)
class Cue:
    """One utterance of the simulated user and when to say it."""

    text: str
    kind: CueKind
    expect: str | None  # regex the reply should match (None: no reply expected)
    start: Start
    delay_s: float  # after the start condition holds
    voice: str
    speed: float
    level_dbfs: float
    pace_s: float | None = None  # concurrent runs: at least this long after the last question


@dataclass(frozen=True)
class Script:
    scenario: str
    trial: int
    session: int
    cues: tuple[Cue, ...]
    snr_db: float
    noise: NoiseKind
    seed: int
    sign: str | None = None  # text on the sign the camera shows throughout (visual)


@dataclass(frozen=True)
class Utterance:
    """A cue as 16 kHz float32 audio, with where its voiced part starts and ends."""

    samples: np.ndarray
    voiced_start_s: float
    voiced_end_s: float


def unavailable(scenario: str) -> str | None:
    """Why a scenario cannot run yet, or None when it can."""
    from cadence.agent.session import Session

    if scenario == "visual" and not hasattr(Session, "push_frame"):
        return "no video input in the session yet (Session.push_frame is missing)"
    if scenario == "tools" and not hasattr(Session, "add_function_output"):
        return "no tool calling in the session yet (Session.add_function_output is missing)"
    return None


def resolve(names: str) -> tuple[list[str], dict[str, str]]:
    """`single,noisy` or `all` → (scenarios to run, {skipped scenario: reason})."""
    wanted = list(SCENARIOS) if names.strip() == "all" else [n.strip() for n in names.split(",")]
    unknown = [n for n in wanted if n not in SCENARIOS]
    if unknown or not wanted:
        raise ConfigError(
            f"unknown scenario {', '.join(unknown) or '(none)'}; "
            f"use all or some of: {', '.join(SCENARIOS)}"
        )
    run, skipped = [], {}
    for name in dict.fromkeys(wanted):
        reason = unavailable(name)
        if reason:
            skipped[name] = reason
        else:
            run.append(name)
    return run, skipped


def _speaker(rng: random.Random) -> tuple[str, float, float]:
    return rng.choice(VOICES), rng.choice(SPEEDS), rng.uniform(*SPEECH_RMS_DBFS)


def _question(rng: random.Random, start: Start, delay_s: float) -> Cue:
    text, expect = rng.choice(QUESTIONS)
    voice, speed, level = _speaker(rng)
    return Cue(text, "question", expect, start, delay_s, voice, speed, level)


def build_script(scenario: str, *, trial: int, session: int = 0, seed: int = 0) -> Script:
    """One trial's script for one session; the same (scenario, trial, session, seed), the same."""
    rng = random.Random(f"{seed}/{scenario}/{session}/{trial}")
    snr, noise = CLEAN_SNR_DB, "pink"
    lead = rng.uniform(0.4, 0.8)
    sign = None
    cues: list[Cue]
    if scenario in ("single", "noisy"):
        cues = [_question(rng, "begin", lead)]
        if scenario == "noisy":
            snr, noise = rng.choice(NOISY_SNR_DB), rng.choice(("pink", "white"))
    elif scenario == "multi-turn":
        first = _question(rng, "begin", lead)
        # Same speaker throughout a conversation; a short think between turns.
        rest = [
            replace(_question(rng, "after_reply", rng.uniform(0.5, 1.5)), voice=first.voice)
            for _ in range(2)
        ]
        cues = [first, *rest]
    elif scenario in ("barge-in", "backchannel"):
        voice, speed, level = _speaker(rng)
        ask = Cue(rng.choice(LONG_REQUESTS), "question", None, "begin", lead, voice, speed, level)
        if scenario == "barge-in":
            text, expect = rng.choice(INTERRUPTIONS)
            kind: CueKind = "barge_in"
        else:
            text, expect, kind = rng.choice(BACKCHANNELS), None, "backchannel"
        # Interrupt early in the reply: even short replies are still playing then.
        during = Cue(text, kind, expect, "during_reply", rng.uniform(0.6, 1.2), voice, speed, level)
        cues = [ask, during]
    elif scenario == "visual":
        sign, expect = rng.choice(SIGNS)
        voice, speed, level = _speaker(rng)
        # Longer lead: the camera has shown the sign for a while when the question comes.
        text = rng.choice(SIGN_QUESTIONS)
        cues = [Cue(text, "question", expect, "begin", lead + 1.0, voice, speed, level)]
    else:
        raise ConfigError(f"scenario {scenario!r} has no script")
    return Script(scenario, trial, session, tuple(cues), snr, noise, rng.randrange(1 << 30), sign)


def paced(script: Script, rng: random.Random) -> Script:
    """Concurrent sessions: each later question waits 6-10 s (at random) after the last one."""
    cues = tuple(
        replace(c, pace_s=rng.uniform(6.0, 10.0)) if c.start == "after_reply" else c
        for c in script.cues
    )
    return replace(script, cues=cues)


def render(cue: Cue) -> Utterance:
    """Synthesize a cue (no lead/tail silence) at its speaking level."""
    chunk = synthesize(cue.text, cue.voice, speed=cue.speed, lead_silence_s=0, tail_silence_s=0)
    audio = chunk.mono_f32().astype(np.float32)
    mask = voiced_mask(audio)
    if not mask.any():
        raise ConfigError(f"voice {cue.voice!r} produced silence for {cue.text!r}")
    rms = float(np.sqrt(np.mean(audio[mask].astype(np.float64) ** 2)))
    audio = audio * (10 ** (cue.level_dbfs / 20) / rms)
    peak = float(np.max(np.abs(audio)))
    if peak > 0.95:  # scale rather than clip: clipping would change what the ASR hears
        audio *= 0.95 / peak
    voiced = np.flatnonzero(mask)
    return Utterance(
        audio.astype(np.float32),
        float(voiced[0]) / SAMPLE_RATE,
        float(voiced[-1] + 1) / SAMPLE_RATE,
    )


def noise_rms(script: Script) -> float:
    """Noise level for the script: its SNR against the quietest speaking level used."""
    level = min(c.level_dbfs for c in script.cues)
    return float(10 ** ((level - script.snr_db) / 20))
