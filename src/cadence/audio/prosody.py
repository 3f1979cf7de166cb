"""The CPU default of the audio-encoder path: prosody (pitch, energy, rate, pauses) of speech.

Feeds the turn controller an end-of-turn cue and the LLM a short hint of what a transcript loses.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import fft, signal, stats

from cadence.agent.events import ProsodyCue
from cadence.audio.chunk import AudioChunk
from cadence.errors import AudioFormatError

SAMPLE_RATE = 16_000
HOP = 160  # 10 ms frames: fine enough for a 300 ms final contour, cheap enough for < 5 ms/s
ENERGY_WINDOW = 480
F0_MIN_HZ = 60.0
F0_MAX_HZ = 450.0
# Pitch is tracked at 8 kHz after a 1 kHz low-pass: half the work, and the low-pass already
# keeps YIN off the formants.
PITCH_RATE = 8_000
_DECIMATE = SAMPLE_RATE // PITCH_RATE
_PHOP = HOP // _DECIMATE
YIN_WINDOW = PITCH_RATE // 40  # 25 ms integration window
YIN_THRESHOLD = 0.15  # de Cheveigné & Kawahara's absolute threshold on the normalized difference
VOICED_APERIODICITY = 0.3  # clearly periodic
WEAK_APERIODICITY = 0.5  # creaky or breathy: used for the final contour only, at half weight
_TAU_MIN = int(PITCH_RATE / F0_MAX_HZ)
_TAU_MAX = int(np.ceil(PITCH_RATE / F0_MIN_HZ))
_FRAME = YIN_WINDOW + _TAU_MAX + 1
_NFFT = 1 << int(np.ceil(np.log2(_FRAME)))  # no circular wrap for lags up to _TAU_MAX
# Pitch above ~1 kHz only adds formant energy that lures YIN onto harmonics.
_LOWPASS = signal.butter(4, 1_000, btype="low", fs=SAMPLE_RATE, output="sos")
# Syllable nuclei stand out in the vowel band: consonants dip deeper there than in full band.
_VOWEL_BAND = signal.butter(2, [300, 2_500], btype="band", fs=SAMPLE_RATE, output="sos")

Contour = Literal["rising", "falling", "flat", "unknown"]


@dataclass(frozen=True)
class ProsodyConfig:
    """Thresholds, named with their units; the defaults were set on Piper and espeak voices."""

    pause_min_ms: float = 180.0  # a silence inside speech at least this long is a pause
    long_pause_ms: float = 500.0
    final_window_ms: float = 400.0  # final contour: voiced frames in the last this-many ms
    rise_st: float = 2.0  # final movement (semitones) that counts as rising / falling
    fall_st: float = -1.5
    fast_syl_per_s: float = 6.2
    slow_syl_per_s: float = 3.6
    min_rate_syllables: int = 4  # fewer nuclei than this: too little speech to call a rate
    filler_min_ms: float = 380.0  # sustained flat voicing at least this long reads as "uh"/"um"
    filler_max_range_st: float = 1.2
    hesitant_at: float = 0.5


@dataclass(frozen=True)
class ProsodyTrack:
    """Frame-level contours at 10 ms per frame (for plots and further features)."""

    f0_hz: np.ndarray  # 0 where neither voiced nor weakly voiced
    aperiodicity: np.ndarray  # YIN's normalised difference at the chosen lag: 0 = periodic
    energy_db: np.ndarray
    vowel_band_db: np.ndarray  # 300-2500 Hz level: where syllable nuclei peak
    speech: np.ndarray  # bool: energy above the adaptive gate
    voiced: np.ndarray  # bool: clearly periodic speech
    weak_voiced: np.ndarray  # bool: creaky/breathy speech with a usable pitch


@dataclass(frozen=True)
class ProsodyFeatures:
    """A summary of how an utterance was said; `to_hint()` and `end_of_turn_score()` use it."""

    duration_ms: float
    speech_ms: float  # phonation time: speech frames, pauses excluded
    voiced_ratio: float  # voiced frames / speech frames
    f0_median_hz: float  # 0 when no voicing was found
    f0_range_st: float  # 10th to 90th percentile, semitones
    final_contour: Contour
    final_delta_st: float  # fitted pitch movement over the final window, semitones
    final_level_st: float  # last voiced 100 ms against the speaker's median, semitones
    energy_db: float  # mean level of speech frames, dBFS
    energy_decay_db: float  # peak of the last 400 ms of speech minus its last 60 ms
    trailing_silence_ms: float  # audio after the last speech frame
    syllables: int  # syllable nuclei: prominent voiced intensity peaks
    syllables_per_s: float  # articulation rate: nuclei per second of phonation
    pause_count: int
    longest_pause_ms: float
    pause_ratio: float  # pause time / (speech + pause time) between first and last speech
    filled_pauses: int  # sustained flat voiced stretches ("uh", "um")
    trailing_filler: bool  # the utterance ends on one
    hesitation: float  # 0..1
    rate: Literal["fast", "slow", "normal", "unknown"]

    @property
    def has_speech(self) -> bool:
        return self.final_contour != "unknown"

    def to_hint(self, config: ProsodyConfig | None = None) -> str:
        """Comma-separated tags in a fixed order, e.g. "question intonation, hesitant, fast".

        Order: intonation, trailing filler, hesitant, long pauses, rate. Tags that say
        nothing (normal rate, no hesitation) are left out; no speech gives "no clear speech".
        """
        cfg = config or ProsodyConfig()
        if not self.has_speech:
            return "no clear speech"
        tags = [
            {
                "rising": "question intonation",
                "falling": "falling intonation",
                "flat": "level intonation",
            }[self.final_contour]
        ]
        if self.trailing_filler:
            tags.append("trailing filler")
        if self.hesitation >= cfg.hesitant_at:
            tags.append("hesitant")
        if self.longest_pause_ms >= cfg.long_pause_ms:
            tags.append("long pauses")
        if self.rate in ("fast", "slow"):
            tags.append(self.rate)
        return ", ".join(tags)

    def end_of_turn_score(self) -> float:
        """0..1: how strongly prosody says the speaker has finished; 0.5 means "no evidence".

        High: a falling (statement) or rising (question) final contour whose energy has
        decayed into silence. Low: level pitch mid-phrase, an utterance cut off while loud,
        a trailing "uh", a hesitant delivery.
        """
        if not self.has_speech:
            return 0.5
        z = 0.0
        if self.final_contour == "falling":
            z += 1.0 + 0.25 * min(4.0, -self.final_delta_st)
        elif self.final_contour == "rising":
            z += 0.8 + 0.15 * min(6.0, self.final_delta_st)
        else:  # level pitch held near the speaker's median is the classic "more to come"
            z -= 1.0 if abs(self.final_level_st) < 2.0 else 0.4
        # A phrase that is over fades out; speech cut off by the end of the audio is not over.
        if self.trailing_silence_ms < 100.0:
            z -= 0.8
        else:
            z += 0.8 * float(np.clip((self.energy_decay_db - 6.0) / 6.0, -1.0, 1.0))
        if self.trailing_filler:
            z -= 2.0
        z -= 1.5 * self.hesitation
        return float(1.0 / (1.0 + np.exp(-z)))

    def to_cue(self, t_ms: float) -> ProsodyCue | None:
        """The turn controller's event, or None when there was no speech to judge.

        No cue rather than a 0.5 one: a controller that blends the score would otherwise be
        pulled toward "undecided" by audio that carried no evidence.
        """
        if not self.has_speech:
            return None
        return ProsodyCue(t_ms=t_ms, end_of_turn=self.end_of_turn_score(), hint=self.to_hint())


def _as_16k(audio: AudioChunk | np.ndarray, sample_rate: int) -> np.ndarray:
    if isinstance(audio, AudioChunk):
        return audio.to(SAMPLE_RATE).mono_f32()
    arr = np.asarray(audio)
    if arr.ndim != 1:
        raise AudioFormatError(f"prosody needs 1-D mono samples, got shape {arr.shape}")
    return AudioChunk.from_array(arr, sample_rate).to(SAMPLE_RATE).mono_f32()


def _yin(x: np.ndarray, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """YIN pitch (Hz) and aperiodicity per 10 ms frame, vectorised through one batch of FFTs."""
    padded = np.concatenate([x, np.zeros(_FRAME, np.float32)])
    frames = sliding_window_view(padded, _FRAME)[: n_frames * _PHOP : _PHOP]
    head = np.zeros_like(frames)
    head[:, :YIN_WINDOW] = frames[:, :YIN_WINDOW]
    # r(tau) = sum_j x_j x_{j+tau} over the window, as a cross-correlation in the frequency domain
    corr = fft.irfft(np.conj(fft.rfft(head, _NFFT)) * fft.rfft(frames, _NFFT), _NFFT)
    r = corr[:, : _TAU_MAX + 1]
    csum = np.zeros((n_frames, _FRAME + 1), np.float64)
    np.cumsum(frames.astype(np.float64) ** 2, axis=1, out=csum[:, 1:])
    taus = np.arange(_TAU_MAX + 1)
    e_tau = csum[:, taus + YIN_WINDOW] - csum[:, taus]
    diff = np.maximum(e_tau[:, :1] + e_tau - 2.0 * r, 0.0)
    # cumulative-mean-normalised difference: removes the bias toward tau = 0
    running = np.cumsum(diff[:, 1:], axis=1)
    cmnd = np.ones_like(diff)
    cmnd[:, 1:] = diff[:, 1:] * taus[1:] / np.maximum(running, 1e-12)
    cmnd[:, :_TAU_MIN] = 1.0
    local_min = np.zeros_like(cmnd, dtype=bool)
    local_min[:, 1:-1] = (cmnd[:, 1:-1] <= cmnd[:, :-2]) & (cmnd[:, 1:-1] < cmnd[:, 2:])
    candidates = local_min & (cmnd < YIN_THRESHOLD)
    has = candidates.any(axis=1)
    tau = np.where(has, candidates.argmax(axis=1), cmnd[:, _TAU_MIN:].argmin(axis=1) + _TAU_MIN)
    tau = np.clip(tau, 1, _TAU_MAX - 1)
    rows = np.arange(n_frames)
    a, b, c = cmnd[rows, tau - 1], cmnd[rows, tau], cmnd[rows, tau + 1]
    denom = a - 2 * b + c
    shift = np.where(np.abs(denom) > 1e-12, 0.5 * (a - c) / np.where(denom == 0, 1, denom), 0.0)
    period = tau + np.clip(shift, -1.0, 1.0)
    return PITCH_RATE / period, b


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) frame index pairs of the True runs, end exclusive."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()
    return list(zip(starts, ends, strict=True))


def _close_gaps(mask: np.ndarray, max_gap: int) -> np.ndarray:
    out = mask.copy()
    runs = _runs(mask)
    for (_, end), (start, _) in itertools.pairwise(runs):
        if start - end <= max_gap:
            out[end:start] = True
    return out


def _energy_db(x: np.ndarray, n_frames: int) -> np.ndarray:
    """Level per 10 ms frame over a 30 ms centred window, in dBFS.

    A window shorter than two pitch periods of a low voice ripples with the pitch and
    fakes syllable peaks.
    """
    power = np.concatenate([[0.0], np.cumsum(x.astype(np.float64) ** 2)])
    centres = np.arange(n_frames) * HOP + HOP // 2
    lo = np.clip(centres - ENERGY_WINDOW // 2, 0, len(x))
    hi = np.clip(centres + ENERGY_WINDOW // 2, 0, len(x))
    return np.asarray(10.0 * np.log10((power[hi] - power[lo]) / np.maximum(hi - lo, 1) + 1e-10))


def _drop_short_runs(mask: np.ndarray, min_len: int) -> np.ndarray:
    out = mask.copy()
    for start, end in _runs(mask):
        if end - start < min_len:
            out[start:end] = False
    return out


def track_prosody(audio: AudioChunk | np.ndarray, sample_rate: int = SAMPLE_RATE) -> ProsodyTrack:
    """Frame-level F0, energy, speech and voicing for mono audio at any supported rate."""
    x = _as_16k(audio, sample_rate).astype(np.float32, copy=False)
    n_frames = len(x) // HOP
    if n_frames < 3:
        empty = np.zeros(max(n_frames, 0))
        flags = empty.astype(bool)
        return ProsodyTrack(empty, empty + 1.0, empty - 100.0, empty - 100.0, flags, flags, flags)
    energy_db = _energy_db(x, n_frames)
    vowel_db = _energy_db(signal.sosfilt(_VOWEL_BAND, x), n_frames)
    smooth_db = np.convolve(energy_db, np.ones(3) / 3, mode="same")
    peak = float(np.percentile(smooth_db, 99))
    floor = float(np.percentile(smooth_db, 10))
    # The gate adapts to the noise floor: 35 dB under the peak in clean audio, but never
    # closer than a third of the way from the floor to the peak in noisy audio.
    gate = max(peak - 35.0, floor + 0.33 * (peak - floor))
    speech = _close_gaps(smooth_db > gate, max_gap=8)  # stop closures are not pauses
    speech = _drop_short_runs(speech, 5)
    low = signal.sosfilt(_LOWPASS, x)[::_DECIMATE].astype(np.float32)
    f0, aperiodicity = _yin(low, n_frames)
    in_range = speech & (f0 >= F0_MIN_HZ) & (f0 <= F0_MAX_HZ)
    voiced = _drop_short_runs(in_range & (aperiodicity < VOICED_APERIODICITY), 3)
    weak = in_range & (aperiodicity < WEAK_APERIODICITY) & ~voiced
    f0 = np.where(voiced | weak, f0, 0.0)
    if voiced.sum() >= 5:
        # Octave errors: fold every estimate to the octave nearest the utterance median. Real
        # intonation stays within ±10 semitones of it; YIN's slips are whole octaves.
        med = float(np.median(f0[voiced]))
        has = f0 > 0
        ratio = np.log2(np.where(has, f0, med) / med)
        octaves = np.where(np.abs(ratio) > 0.9, np.round(ratio), 0.0)
        f0 = np.where(has, f0 / 2.0**octaves, 0.0)
        smoothed = signal.medfilt(np.where(voiced, f0, 0.0), 5)
        f0 = np.where(voiced & (smoothed > 0), smoothed, f0)
    return ProsodyTrack(f0, aperiodicity, energy_db, vowel_db, speech, voiced, weak)


def _final_contour(
    st: np.ndarray, track: ProsodyTrack, cfg: ProsodyConfig
) -> tuple[Contour, float, float]:
    """Pitch movement over the last voiced stretch, from a robust straight-line fit.

    The stretch is the final voiced segment, extended back over earlier ones until it spans
    80 ms, within the last `final_window_ms`: a fit across the previous word would mix its
    accent into the final rise or fall. Creaky frames (weakly periodic) count at half weight:
    a low creak is how many voices end a statement. Frames 18 dB under the peak are breath.
    """
    usable = track.voiced | track.weak_voiced
    idx = np.flatnonzero(usable)
    last = int(idx[-1])
    window = int(cfg.final_window_ms / 10)
    sel = idx[idx > last - window]
    sel = sel[track.energy_db[sel] >= track.energy_db[sel].max() - 18.0]
    breaks = np.flatnonzero(np.diff(sel) > 3) + 1  # segment starts (gaps over 30 ms)
    for start in breaks[::-1]:
        if sel[-1] - sel[start] >= 8:
            sel = sel[start:]
            break
    weights = np.where(track.voiced[sel], 1.0, 0.5)
    if weights.sum() < 6 or not track.voiced[sel].any():
        return "unknown", 0.0, 0.0
    # Theil–Sen (median of pairwise slopes) shrugs off the odd octave or creak misestimate
    # that would swing a least-squares line; clear voicing counts twice by repetition.
    reps = np.where(track.voiced[sel], 2, 1)
    slope = float(stats.theilslopes(np.repeat(st[sel], reps), np.repeat(sel * 0.01, reps))[0])
    delta = float(slope * (sel[-1] - sel[0]) * 0.01)
    level = float(np.average(st[sel[-10:]], weights=weights[-10:]))
    contour: Contour = "flat"
    if delta >= cfg.rise_st:
        contour = "rising"
    elif delta <= cfg.fall_st or (level <= -2.5 and delta < 0):
        contour = "falling"
    return contour, delta, level


def analyze_prosody(
    audio: AudioChunk | np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    config: ProsodyConfig | None = None,
) -> ProsodyFeatures:
    """Summarise one utterance (speech plus the silence the VAD saw after it)."""
    cfg = config or ProsodyConfig()
    track = track_prosody(audio, sample_rate)
    n = len(track.energy_db)
    speech, voiced = track.speech, track.voiced
    if n == 0 or voiced.sum() < 10:
        return ProsodyFeatures(
            duration_ms=n * 10.0, speech_ms=float(speech.sum()) * 10.0, voiced_ratio=0.0,
            f0_median_hz=0.0, f0_range_st=0.0, final_contour="unknown", final_delta_st=0.0,
            final_level_st=0.0, energy_db=-100.0, energy_decay_db=0.0, trailing_silence_ms=0.0,
            syllables=0, syllables_per_s=0.0, pause_count=0, longest_pause_ms=0.0,
            pause_ratio=0.0, filled_pauses=0, trailing_filler=False, hesitation=0.0,
            rate="unknown",
        )
    med = float(np.median(track.f0_hz[voiced]))
    st = np.where(track.f0_hz > 0, 12.0 * np.log2(np.maximum(track.f0_hz, 1.0) / med), 0.0)
    contour, delta, level = _final_contour(st, track, cfg)

    speech_idx = np.flatnonzero(speech)
    first, last = int(speech_idx[0]), int(speech_idx[-1]) + 1
    gaps = [e - s for s, e in _runs(~speech[first:last])]
    pauses = [g * 10.0 for g in gaps if g * 10.0 >= cfg.pause_min_ms]
    speech_ms = float(speech.sum()) * 10.0
    tail = track.energy_db[max(first, last - 40) : last]
    decay = float(tail.max() - np.mean(tail[-6:]))

    # Syllable nuclei (after de Jong & Wempe): vowel-band intensity peaks with a 2 dB dip on
    # each side, inside voiced speech, at least 80 ms apart.
    contour_db = np.convolve(track.vowel_band_db, [0.25, 0.5, 0.25], mode="same")
    peaks, _ = signal.find_peaks(contour_db, prominence=2.0, distance=8)
    nuclei = [p for p in peaks if voiced[max(0, p - 2) : p + 3].any()]
    rate_syl = len(nuclei) / max(speech_ms / 1000.0, 1e-3)

    fillers = 0
    trailing_filler = False
    min_filler = int(cfg.filler_min_ms / 10)
    voiced_runs = _runs(_close_gaps(voiced, max_gap=2))
    for start, end in voiced_runs:
        if end - start < min_filler:
            continue
        seg = st[start:end][voiced[start:end]]
        run_nuclei = sum(1 for p in nuclei if start <= p < end)
        spread = cfg.filler_max_range_st
        flat = np.ptp(seg) <= 2 * spread and np.std(seg) <= spread / 2
        if flat and run_nuclei <= 1:
            fillers += 1
            trailing_filler = trailing_filler or end >= voiced_runs[-1][1]

    long_pauses = sum(1 for p in pauses if p >= cfg.long_pause_ms)
    pause_ms = float(sum(pauses))
    pause_ratio = pause_ms / max(pause_ms + speech_ms, 1.0)
    hesitation = min(
        1.0,
        0.3 * long_pauses
        + 0.1 * (len(pauses) - long_pauses)
        + 0.35 * fillers
        + 1.5 * max(0.0, pause_ratio - 0.15),
    )
    rate: Literal["fast", "slow", "normal", "unknown"] = "normal"
    if len(nuclei) < cfg.min_rate_syllables:
        rate = "unknown"
    elif rate_syl >= cfg.fast_syl_per_s:
        rate = "fast"
    elif rate_syl <= cfg.slow_syl_per_s:
        rate = "slow"
    f0v = track.f0_hz[voiced]
    return ProsodyFeatures(
        duration_ms=n * 10.0,
        speech_ms=speech_ms,
        voiced_ratio=float(voiced.sum() / max(speech.sum(), 1)),
        f0_median_hz=med,
        f0_range_st=float(12.0 * np.log2(np.percentile(f0v, 90) / np.percentile(f0v, 10))),
        final_contour=contour,
        final_delta_st=delta,
        final_level_st=level,
        energy_db=float(np.mean(track.energy_db[speech])),
        energy_decay_db=decay,
        trailing_silence_ms=float(n - last) * 10.0,
        syllables=len(nuclei),
        syllables_per_s=float(rate_syl),
        pause_count=len(pauses),
        longest_pause_ms=max(pauses, default=0.0),
        pause_ratio=float(pause_ratio),
        filled_pauses=fillers,
        trailing_filler=trailing_filler,
        hesitation=float(hesitation),
        rate=rate,
    )


def endpoint_silence_ms(end_of_turn: float, base_ms: float) -> float:
    """The silence to wait before ending the turn, scaled by prosody's end-of-turn score.

    `base_ms * 2 ** (1 - 2 * score)`: score 0.5 (no evidence) keeps `base_ms`, 1.0 halves it,
    0.0 doubles it. A suggestion for the turn controller, which owns the decision.
    """
    score = float(np.clip(end_of_turn, 0.0, 1.0))
    return base_ms * 2.0 ** (1.0 - 2.0 * score)
