"""Echo guard: how likely a stretch of mic audio is the agent's own voice coming back.

The agent's output is the reference: find its delay in the mic (GCC-PHAT, 0–300 ms), fit a
short echo path on the last second, report the share of mic energy the played audio explains.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from cadence.errors import AudioFormatError, ConfigError


@dataclass(frozen=True)
class EchoGuardConfig:
    sample_rate_hz: int = 16_000
    max_delay_ms: float = 300.0  # speaker → mic paths longer than this are not searched
    delay_window_ms: float = 1000.0  # mic span used to (re)estimate the delay
    history_ms: float = 3000.0  # how much reference and mic audio is kept
    path_lead_ms: float = 2.0  # the fitted path starts this much before the found delay
    path_ms: float = 16.0  # and lasts this long: loudspeaker ringing, early reflections
    min_path_explained: float = 0.3  # a delay whose path explains less is not an echo path
    min_reference_rms: float = 10 ** (-55 / 20)  # quieter reference: nothing can echo
    noise_percentile: float = 10.0  # of recent 20 ms mic frame energies: the noise floor
    recheck_ms: float = 250.0  # re-estimate a known delay at most this often
    window_ms: float = 80.0  # default segment: the newest mic audio (VAD's start run + a frame)

    def __post_init__(self) -> None:
        if self.sample_rate_hz <= 0 or self.max_delay_ms <= 0 or self.delay_window_ms <= 0:
            raise ConfigError("echo guard rate, max_delay_ms and delay_window_ms must be > 0")
        if self.history_ms < self.max_delay_ms + self.delay_window_ms:
            raise ConfigError("echo guard history_ms must cover max_delay_ms + delay_window_ms")


LOW_SCORE = 0.5  # below this, a stale delay estimate is re-checked before answering


class _Timeline:
    """A bounded buffer of samples addressed by absolute sample index; unknown reads as 0."""

    def __init__(self, capacity: int) -> None:
        self._buf = np.zeros(capacity, np.float32)
        self._cap = capacity
        self.end = 0  # one past the newest sample written

    def write(self, start: int, samples: np.ndarray) -> None:
        stop = start + len(samples)
        if stop > self.end:
            gap_from = max(self.end, stop - self._cap)
            self._buf[np.arange(gap_from, stop) % self._cap] = 0.0  # stale slots become silence
            self.end = stop
        lo = max(start, self.end - self._cap)
        if lo < stop:
            self._buf[np.arange(lo, stop) % self._cap] = samples[lo - start :]

    def read(self, start: int, n: int) -> np.ndarray:
        out = np.zeros(max(n, 0), np.float32)
        lo, hi = max(start, self.end - self._cap), min(start + n, self.end)
        if lo < hi:
            out[lo - start : hi - start] = self._buf[np.arange(lo, hi) % self._cap]
        return out


def _mono_f32(samples: np.ndarray) -> np.ndarray:
    arr = np.asarray(samples)
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise AudioFormatError(f"echo guard takes mono audio, got shape {arr.shape}")
    if arr.dtype == np.int16:
        return arr.astype(np.float32) / 32768.0
    return np.nan_to_num(arr.astype(np.float32, copy=False))


class EchoGuard:
    """Feed it what the agent played and what the mic heard, both 16 kHz mono on the session
    clock (seconds); ask how echo-like a mic segment is: 0 = not our voice, 1 = only echo."""

    def __init__(self, config: EchoGuardConfig | None = None) -> None:
        self.config = c = config or EchoGuardConfig()
        self._sr = c.sample_rate_hz
        capacity = self._samples(c.history_ms / 1000)
        self._ref = _Timeline(capacity)
        self._mic = _Timeline(capacity)
        self._frame = self._samples(0.02)
        self._mic_energy: deque[float] = deque(maxlen=max(1, capacity // self._frame))
        self._max_lag = self._samples(c.max_delay_ms / 1000)
        self._taps = max(1, self._samples(c.path_ms / 1000))
        self._delay_checked = -(1 << 62)
        self._pending: deque[tuple[int, np.ndarray]] = deque()  # reference not yet due
        self._ref_tail = 0  # end of all reference pushed, due or not
        self._delay: int | None = None

    def _samples(self, seconds: float) -> int:
        return round(seconds * self._sr)

    @property
    def delay_ms(self) -> float | None:
        """The current estimate of the speaker → mic delay, or None before any."""
        return None if self._delay is None else self._delay * 1000 / self._sr

    def push_reference(self, samples: np.ndarray, t_s: float | None = None) -> None:
        """Agent audio that starts playing at session time `t_s`. Without a time it queues
        behind the reference already pushed, or starts now (the mic's newest sample).

        Replies are synthesized faster than they play, so most of a reference lies in the
        future: it waits in `_pending` and enters the bounded timeline as the mic catches up
        (written at once, a long clause would wrap the ring over its own beginning)."""
        start = max(self._ref_tail, self._mic.end) if t_s is None else self._samples(t_s)
        audio = _mono_f32(samples)
        self._pending.append((start, audio))
        self._ref_tail = max(self._ref_tail, start + len(audio))
        self._flush_reference(self._mic.end)

    def _flush_reference(self, upto: int) -> None:
        while self._pending and self._pending[0][0] < upto:
            start, audio = self._pending.popleft()
            now = audio[: upto - start]
            self._ref.write(start, now)
            if len(now) < len(audio):
                self._pending.appendleft((start + len(now), audio[len(now) :]))
                break

    def clear_reference_from(self, t_s: float | None = None) -> None:
        """Playback paused or stopped at `t_s` (default: now): audio queued after it will not
        be played then, so it must not be matched against the mic."""
        start = self._mic.end if t_s is None else self._samples(t_s)
        kept: deque[tuple[int, np.ndarray]] = deque()
        for begin, audio in self._pending:
            if begin < start:
                kept.append((begin, audio[: start - begin]))
        self._pending = kept
        self._ref_tail = min(self._ref_tail, start)
        if start < self._ref.end:
            self._ref.write(start, np.zeros(self._ref.end - start, np.float32))
            self._ref.end = start

    def push_mic(self, samples: np.ndarray, t_s: float | None = None) -> None:
        """Mic audio captured from session time `t_s`; without one, it follows the last push."""
        mic = _mono_f32(samples)
        self._mic.write(self._mic.end if t_s is None else self._samples(t_s), mic)
        self._flush_reference(self._mic.end)
        usable = len(mic) - len(mic) % self._frame
        if usable:
            frames = mic[:usable].reshape(-1, self._frame)
            self._mic_energy.extend(np.mean(frames * frames, axis=1).tolist())

    def reset(self) -> None:
        """Forget all audio and the delay (a new call, a new device)."""
        capacity = self._samples(self.config.history_ms / 1000)
        self._ref, self._mic = _Timeline(capacity), _Timeline(capacity)
        self._mic_energy.clear()
        self._delay = None
        self._delay_checked = -(1 << 62)
        self._pending = deque()
        self._ref_tail = 0  # end of all reference pushed, due or not

    def estimate_delay_ms(self, end_s: float | None = None) -> float | None:
        """Re-estimate the delay from the mic window ending at `end_s` (default: newest)."""
        end = self._mic.end if end_s is None else self._samples(end_s)
        self._update_delay(end, force=True)
        return self.delay_ms

    def _update_delay(self, end: int, *, force: bool = False) -> None:
        """GCC-PHAT over the last second; keep the lag only if a fitted echo path explains
        a fair share of the mic (two unrelated voices always have *some* best lag)."""
        recent = 0 <= end - self._delay_checked < self._samples(self.config.recheck_ms / 1000)
        if self._delay is not None and recent and not force:
            return  # a device's delay is stable; re-checking costs two long FFTs
        self._delay_checked = end
        n, lag = self._samples(self.config.delay_window_ms / 1000), self._max_lag
        mic = self._mic.read(end - n, n)
        ref = self._ref.read(end - n - lag, n + lag)
        if _rms(ref) < self.config.min_reference_rms or _rms(mic) == 0.0:
            return
        nfft = 1 << (2 * n + lag).bit_length()
        cross = np.fft.rfft(ref, nfft) * np.conj(np.fft.rfft(mic, nfft))
        # Partial PHAT whitening: sharp peaks for speech, without blowing up empty bins.
        cross /= np.abs(cross) ** 0.8 + 1e-12
        cc = np.fft.irfft(cross, nfft)[: lag + 1]  # cc[k]: ref shifted by k matches mic
        delay = lag - int(np.argmax(np.abs(cc)))  # abs: a speaker may invert polarity
        fit = self._fit(end - n, end, delay, train_end=end)
        if fit is not None and fit[0] >= self.config.min_path_explained:
            self._delay = delay

    def _fit(self, a: int, b: int, delay: int, train_end: int) -> tuple[float, float] | None:
        """Fit a short echo path (an FIR filter around `delay`, least squares) on the second
        of audio before `train_end`; return the share of mic energy it explains there and
        in [a, b)."""
        c = self.config
        taps, lead = self._taps, self._samples(c.path_lead_ms / 1000)
        n = self._samples(c.delay_window_ms / 1000)
        t0 = train_end - n
        mic = self._mic.read(t0, n).astype(np.float64)
        # x[i] is the reference as heard `delay - lead` samples later, with `taps - 1` of
        # history in front: the path may start `lead` early and ring `taps - lead` after.
        x = self._ref.read(t0 - delay + lead - (taps - 1), n + taps - 1).astype(np.float64)
        if _rms(x) < c.min_reference_rms:
            return None
        nfft = 1 << (n + taps).bit_length()
        xf, mf = np.fft.rfft(x, nfft), np.fft.rfft(mic, nfft)
        auto = np.fft.irfft(xf * np.conj(xf), nfft)[:taps]  # Toeplitz autocorrelation
        cross = np.fft.irfft(xf * np.conj(mf), nfft)[:taps][::-1]  # cross[k]: tap k
        idx = np.abs(np.arange(taps)[:, None] - np.arange(taps)[None, :])
        gram = auto[idx] + (1e-3 * auto[0] + 1e-12) * np.eye(taps)
        path = np.linalg.solve(gram, cross)
        noise = self._noise_energy()
        predicted = np.convolve(x, path, mode="valid")
        train = _explained(float(mic @ mic), float(np.sum((mic - predicted) ** 2)), noise * n)
        seg_mic = self._mic.read(a, b - a).astype(np.float64)
        seg_x = self._ref.read(a - delay + lead - (taps - 1), b - a + taps - 1)
        seg_res = seg_mic - np.convolve(seg_x.astype(np.float64), path, mode="valid")
        segment = _explained(float(seg_mic @ seg_mic), float(seg_res @ seg_res), noise * (b - a))
        return train, segment

    def _noise_energy(self) -> float:
        if not self._mic_energy:
            return 0.0
        energies = np.fromiter(self._mic_energy, float)
        return float(np.percentile(energies, self.config.noise_percentile))

    def likelihood(self, start_s: float | None = None, end_s: float | None = None) -> float:
        """Share of the mic energy in [start_s, end_s) that the agent's own voice, through
        the fitted echo path, explains, after the stationary noise floor is taken out: 0..1.
        Defaults: the newest `window_ms` of mic audio."""
        b = self._mic.end if end_s is None else self._samples(end_s)
        if start_s is None:
            a = b - self._samples(self.config.window_ms / 1000)
        else:
            a = self._samples(start_s)
        if b - a <= 0:
            return 0.0
        self._update_delay(b)
        score = self._explained_by_echo(a, b)
        if score < LOW_SCORE and self._delay is not None:
            # An estimate made just after playback began may have locked onto a chance lag:
            # before calling this the user's voice, look for the delay again.
            previous = self._delay
            self._update_delay(b, force=True)
            if self._delay != previous:
                score = max(score, self._explained_by_echo(a, b))
        return score

    def _explained_by_echo(self, a: int, b: int) -> float:
        if self._delay is None:
            # No echo path found: searching lags on a short segment would find a chance
            # match between two voices, both being near-periodic.
            return 0.0
        # Fit the path on the second before the segment (out of sample: a user talking in
        # the segment cannot be "explained"); just after the agent started, include it.
        fit = self._fit(a, b, self._delay, train_end=a)
        if fit is None or fit[0] < self.config.min_path_explained:
            fit = self._fit(a, b, self._delay, train_end=b)
        return 0.0 if fit is None else fit[1]


def _explained(mic: float, residual: float, noise: float) -> float:
    """1 - unexplained / voiced energy; the noise floor counts as neither, but a misjudged
    floor may take at most half of the mic energy (a quiet user must not become "echo")."""
    if mic <= 0.0:
        return 0.0
    voiced = max(mic - noise, 0.5 * mic)
    return float(min(1.0, max(0.0, 1.0 - max(residual - noise, 0.0) / voiced)))


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x * x))) if len(x) else 0.0


