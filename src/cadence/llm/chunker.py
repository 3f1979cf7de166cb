"""Sans-I/O clause chunker: turns a stream of LLM text deltas into speakable pieces for TTS.

The first piece is a short clause so speech starts early; later pieces are whole sentences.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cadence.errors import ConfigError


@dataclass(frozen=True)
class ChunkerOptions:
    """How text is cut into pieces (counts are in words, lengths in characters)."""

    first_clause_min_words: int = 3  # a comma before this many words does not end piece one
    first_clause_max_words: int = 8  # piece one ends here even without punctuation
    max_chars: int = 180  # any piece longer than this is cut at a clause, else a word

    def __post_init__(self) -> None:
        if not 1 <= self.first_clause_min_words <= self.first_clause_max_words:
            raise ConfigError(
                "ChunkerOptions: need 1 <= first_clause_min_words <= first_clause_max_words, "
                f"got {self.first_clause_min_words} and {self.first_clause_max_words}"
            )
        if self.max_chars < 16:
            raise ConfigError(f"ChunkerOptions.max_chars must be at least 16, got {self.max_chars}")


# Words that end with a period but never end a sentence: titles before names, "e.g.", "vs.".
_NEVER_FINAL = frozenset(
    "mr mrs ms dr prof st jr sr mt ft rev fr gen col capt lt sgt gov sen rep hon "
    "vs e.g i.e cf approx fig figs vol ch pp dept univ ave blvd".split()
)
_CLOSERS = "\"')]}»”’"
_OPENERS = "\"'([{«“‘"
_DASHES = frozenset({"-", "–", "—", "--"})
# Markdown that only makes sense at the start of a line: headings, bullets, numbered items.
_LINE_MARKER = re.compile(r"(?:#{1,6}|[-*+•>]|\d{1,3}[.)])")
_EMOJI = re.compile(
    "[\U0001f000-\U0001faff\u2600-\u27bf\u2b00-\u2bff\u2300-\u23ff"
    "\ufe0e\ufe0f\u200d\u20e3\U000e0020-\U000e007f]"
)
_INLINE_MARKUP = re.compile(r"\*+|`+|~~|^_+|_+$")
_TOKEN = re.compile(r"\s+|\S+")


def _normalize_word(word: str, at_line_start: bool) -> str:
    """The word as it should be spoken: markdown and emojis removed ('' drops the word)."""
    if at_line_start and _LINE_MARKER.fullmatch(word):
        return ""
    word = _EMOJI.sub("", word)
    if word == "*":  # a lone star between spaces is more likely arithmetic than emphasis
        return word
    return _INLINE_MARKUP.sub("", word)


@dataclass(frozen=True)
class _Word:
    text: str
    newline_before: bool


class _WordSplitter:
    """Cuts raw text into normalized words; a word is complete once whitespace follows it."""

    def __init__(self) -> None:
        self._partial = ""
        self._newline = False  # a newline since the last emitted word
        self._line_start = True

    def push(self, text: str, final: bool = False) -> list[_Word]:
        words: list[_Word] = []
        tokens = _TOKEN.findall(self._partial + text)
        self._partial = ""
        for index, token in enumerate(tokens):
            if token.isspace():
                if "\n" in token:
                    self._newline = self._line_start = True
                continue
            if index == len(tokens) - 1 and not final:
                self._partial = token
                break
            spoken = _normalize_word(token, self._line_start)
            self._line_start = False
            if spoken:
                words.append(_Word(spoken, self._newline))
                self._newline = False
        return words

    def head(self) -> tuple[bool, str] | None:
        """(newline before, first character) of the incomplete word, if it has begun."""
        if not self._partial:
            return None
        return self._newline, self._partial[0]


def _core(word: str) -> str:
    return word.rstrip(_CLOSERS).lstrip(_OPENERS)


def _is_ellipsis(word: str) -> bool:
    core = _core(word)
    return core.endswith("..") or core.endswith("…")


def _is_clause_end(word: str) -> bool:
    core = word.rstrip(_CLOSERS)
    return word in _DASHES or core.endswith((",", ";", ":", "—", "–")) or _is_ellipsis(word)


def _period_kind(word: str) -> str:
    """'' (no sentence end), 'final' (ends one), 'maybe' (ends one unless lowercase follows)."""
    core = _core(word)
    if not core or _is_ellipsis(word):
        return ""
    if core[-1] in "!?":
        return "final"
    if core[-1] != ".":
        return ""
    stem = core[:-1].lower()
    if stem in _NEVER_FINAL or (len(stem) == 1 and stem.isalpha()):  # "Dr.", "J. K."
        return ""
    return "maybe"  # "etc.", "U.S.", "a.m.", or a plain sentence end


def _continues_sentence(newline_before: bool, first_char: str) -> bool:
    return not newline_before and first_char.islower()


class _Segmenter:
    """Groups normalized words into pieces; see `ClauseChunker` for the rules."""

    def __init__(self, options: ChunkerOptions) -> None:
        self._options = options
        self._words: list[str] = []
        self._chars = 0  # length of " ".join(self._words)
        self._first_done = False
        self._pending_period = False  # the last word may end a sentence; the next word decides

    def add(self, word: _Word) -> list[str]:
        pieces: list[str] = []
        if self._pending_period:
            pieces += self.resolve(word.newline_before, word.text[0])
        if word.newline_before and self._words:
            pieces.append(self._emit(len(self._words)))
        while self._words and self._chars + 1 + len(word.text) > self._options.max_chars:
            pieces.append(self._emit(self._overflow_cut()))
        self._words.append(word.text)
        self._chars += len(word.text) + (1 if len(self._words) > 1 else 0)
        pieces += self._after_word(word.text)
        return pieces

    def resolve(self, newline_before: bool, first_char: str) -> list[str]:
        """Decide a pending period now that the next word's first character is known."""
        self._pending_period = False
        if _continues_sentence(newline_before, first_char):
            return []
        return [self._emit(len(self._words))]

    @property
    def pending_period(self) -> bool:
        return self._pending_period

    def finish(self) -> list[str]:
        return [self._emit(len(self._words))] if self._words else []

    def _after_word(self, text: str) -> list[str]:
        count = len(self._words)
        kind = _period_kind(text)
        first = not self._first_done
        if kind == "final" or (first and count >= self._options.first_clause_max_words):
            return [self._emit(count)]
        if kind == "maybe":
            self._pending_period = True
        elif first and count >= self._options.first_clause_min_words and _is_clause_end(text):
            return [self._emit(count)]
        return []

    def _overflow_cut(self) -> int:
        """How many leading words to emit when the next word would overflow `max_chars`."""
        for index in range(len(self._words) - 1, 0, -1):
            if _is_clause_end(self._words[index - 1]):
                return index
        return len(self._words)

    def _emit(self, count: int) -> str:
        piece = " ".join(self._words[:count])
        del self._words[:count]
        self._chars = len(" ".join(self._words))
        self._first_done = True
        if not self._words:
            self._pending_period = False
        return piece


class ClauseChunker:
    """Feed text deltas, get speakable pieces; `flush()` at the end of the reply.

    Rules: piece one ends at the first clause mark (, ; : dash, ellipsis) after
    `first_clause_min_words` words, at a sentence end, or after `first_clause_max_words`
    words; later pieces are whole sentences, cut at the last clause mark (else a word
    boundary) when longer than `max_chars`. A line break always ends a piece. Periods in
    "Dr.", "e.g.", "3.14", "10:30", "a@b.com" and before a lowercase word end nothing.
    Pieces never split a word, so `" ".join(pieces) == normalize_for_speech(text)` for any
    way of cutting the same text into deltas.
    """

    def __init__(self, options: ChunkerOptions | None = None) -> None:
        self.options = options or ChunkerOptions()
        self._splitter = _WordSplitter()
        self._segmenter = _Segmenter(self.options)

    def push(self, delta: str) -> list[str]:
        pieces: list[str] = []
        for word in self._splitter.push(delta):
            pieces += self._segmenter.add(word)
        head = self._splitter.head()
        # A letter starting the next word survives normalization, so it decides a pending
        # period as the whole word would: one token sooner, same pieces.
        if self._segmenter.pending_period and head is not None and head[1].isalpha():
            pieces += self._segmenter.resolve(*head)
        return pieces

    def flush(self) -> list[str]:
        """End of the reply: return what is left and get ready for the next reply."""
        pieces: list[str] = []
        for word in self._splitter.push("", final=True):
            pieces += self._segmenter.add(word)
        pieces += self._segmenter.finish()
        self.reset()
        return pieces

    def reset(self) -> None:
        """Drop everything buffered (the generation was cancelled)."""
        self._splitter = _WordSplitter()
        self._segmenter = _Segmenter(self.options)


def normalize_for_speech(text: str) -> str:
    """`text` without markdown and emojis, whitespace collapsed: what the pieces join to."""
    return " ".join(word.text for word in _WordSplitter().push(text, final=True))
