"""Endpointing: how long a silence must last before the user's turn is over, from their words.

A transparent rule-based end-of-turn score on the transcript, optionally blended with a prosody
cue, sets an adaptive silence threshold that also stretches to the speaker's usual pauses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cadence.errors import ConfigError

_WORD = re.compile(r"[a-z0-9]+(?:['’-][a-z0-9]+)*")

FILLERS = frozenset({"um", "uh", "umm", "uhm", "uhh", "er", "erm", "ah", "eh", "hmm", "mm"})
CONJUNCTIONS = frozenset(
    {"and", "but", "so", "because", "cause", "or", "nor", "then", "if", "when", "while",
     "although", "though", "since", "unless", "until", "whether", "plus", "also"}
)  # fmt: skip
# Words a sentence cannot end on: prepositions, articles, determiners, auxiliaries.
DANGLING = frozenset(
    {"of", "to", "in", "on", "at", "for", "with", "about", "from", "by", "into", "onto", "than",
     "as", "over", "under", "between", "through", "after", "before", "without", "within", "via",
     "like", "the", "a", "an", "my", "your", "his", "her", "its", "our", "their", "this",
     "these", "those", "some", "any", "every", "each", "is", "are", "was", "were", "am", "be",
     "been", "being", "do", "does", "did", "have", "has", "had", "will", "would", "can",
     "could", "should", "shall", "may", "might", "must", "i", "we", "they", "he", "she",
     "i'm", "let's", "what", "which", "who", "whose", "where", "how", "why", "very", "really",
     "more", "most", "not"}
)  # fmt: skip
# Words nothing can end on, question mark or not: articles, determiners, possessives.
NEVER_FINAL = frozenset(
    {"the", "a", "an", "my", "your", "his", "her", "its", "our", "their", "this", "these",
     "those", "some", "any", "every", "each", "very", "really", "more", "most"}
)  # fmt: skip
QUESTION_OPENERS = frozenset(
    {"what", "what's", "where", "when", "why", "how", "who", "which", "is", "are", "can",
     "could", "would", "will", "do", "does", "did", "should", "tell", "explain", "describe"}
)  # fmt: skip
SHORT_ANSWERS = frozenset(
    {"yes", "no", "yeah", "nope", "okay", "ok", "sure", "thanks", "hello", "hi", "hey", "bye",
     "stop", "right", "correct", "exactly", "please", "goodbye"}
)  # fmt: skip
# Listener feedback that leaves the floor with the speaker: never a reason to stop talking.
BACKCHANNELS = frozenset(
    {"mm", "mmm", "mhm", "mm-hmm", "mm-hm", "mmhmm", "hmm", "uh-huh", "uhhuh", "uh", "um", "huh",
     "yeah", "yea", "yep", "yup", "yes", "right", "okay", "ok", "sure", "ah", "oh", "wow",
     "cool", "nice", "great", "alright", "exactly", "true", "totally", "indeed", "interesting",
     "really", "ha", "haha", "i see", "got it", "all right", "makes sense", "that's right",
     "that's true", "i know", "of course", "oh wow", "fair enough"}
)  # fmt: skip
MAX_BACKCHANNEL_WORDS = 4


def words(text: str) -> list[str]:
    """Lower-case words without punctuation; hyphens and apostrophes stay inside words."""
    return _WORD.findall(text.lower())


def normalize(text: str) -> str:
    """The form two transcripts are compared in: case and punctuation do not count."""
    return " ".join(words(text))


def is_backchannel(text: str) -> bool:
    """True when `text` has no words, or only a few listener-feedback phrases ("mm-hmm")."""
    found = words(text)
    if len(found) > MAX_BACKCHANNEL_WORDS:
        return False
    i = 0
    while i < len(found):
        if " ".join(found[i : i + 2]) in BACKCHANNELS:
            i += 2
        elif found[i] in BACKCHANNELS:
            i += 1
        else:
            return False
    return True


def semantic_score(text: str) -> float:
    """How likely the transcript is a finished turn, 0..1, by a few readable rules."""
    found = words(text)
    if not found:
        return 0.0
    tail = text.rstrip()
    last = found[-1]
    if tail.endswith(("...", "…", ",", "-", "—", ";", ":")):
        return 0.15  # trailing off or a list in progress
    if last in FILLERS:
        return 0.05
    if last in CONJUNCTIONS:
        return 0.1
    question = tail.endswith("?")
    if len(found) == 1 and last in DANGLING:
        # "What?" alone may be a real "pardon?", but the recognizer also punctuates the first
        # word of a question the user is still saying: wait a middling while, not the least.
        return 0.5
    if last in DANGLING and not (question and last not in NEVER_FINAL):
        # "the capital of", "I want to", "what is the"; but a question may well end on a
        # verb or preposition ("How many legs does a spider have?", "Made of?")
        return 0.15
    if question:
        return 0.95
    if tail.endswith((".", "!")):
        return 0.85
    if len(found) == 1 and last in SHORT_ANSWERS:
        return 0.75
    if len(found) >= 3 and found[0] in QUESTION_OPENERS:
        return 0.7  # shaped like a question, the recognizer just gave no punctuation
    return 0.5


@dataclass(frozen=True)
class EndpointConfig:
    """Silence thresholds and how the score and the speaker move them (milliseconds)."""

    min_silence_ms: float = 160.0  # a finished question: endpoint well inside the 200 ms budget
    max_silence_ms: float = 1200.0  # after "um" / "and" / "the capital of"
    complete_score: float = 0.85  # at or above: shortest threshold
    incomplete_score: float = 0.1  # at or below: longest threshold
    prosody_weight: float = 0.35  # share of the prosody cue in the blended score
    reference_pause_ms: float = 300.0  # a typical within-turn pause for an average speaker
    speaker_factor_min: float = 0.75
    speaker_factor_max: float = 1.6
    pause_smoothing: float = 0.25  # weight of each newly observed pause
    max_observed_pause_ms: float = 2000.0

    def __post_init__(self) -> None:
        if not 0 < self.min_silence_ms <= self.max_silence_ms:
            raise ConfigError(
                f"endpoint silence needs 0 < min_silence_ms ({self.min_silence_ms}) "
                f"<= max_silence_ms ({self.max_silence_ms})"
            )
        if not 0 <= self.incomplete_score < self.complete_score <= 1:
            raise ConfigError("endpoint scores need 0 <= incomplete_score < complete_score <= 1")
        if not 0 <= self.prosody_weight <= 1 or not 0 < self.pause_smoothing <= 1:
            raise ConfigError("prosody_weight must be 0..1 and pause_smoothing in (0, 1]")
        if not 0 < self.speaker_factor_min <= 1 <= self.speaker_factor_max:
            raise ConfigError("speaker factors need 0 < min <= 1 <= max")


class Endpointer:
    """Decides the silence after which a transcript ends the turn; learns the speaker's pauses.

    Pure: time comes in as arguments. The session's controller calls `observe_pause` with
    each pause the user made *inside* a turn (they went on speaking afterwards).
    """

    def __init__(self, config: EndpointConfig | None = None) -> None:
        self.config = config or EndpointConfig()
        self._typical_pause_ms = self.config.reference_pause_ms

    @property
    def typical_pause_ms(self) -> float:
        return self._typical_pause_ms

    @property
    def speaker_factor(self) -> float:
        """>1 for a speaker who pauses longer than usual mid-turn, <1 for a brisk one."""
        c = self.config
        factor = self._typical_pause_ms / c.reference_pause_ms
        return min(c.speaker_factor_max, max(c.speaker_factor_min, factor))

    def observe_pause(self, pause_ms: float) -> None:
        if not pause_ms > 0:  # also rejects NaN
            return
        pause = min(pause_ms, self.config.max_observed_pause_ms)
        a = self.config.pause_smoothing
        self._typical_pause_ms = (1 - a) * self._typical_pause_ms + a * pause

    def score(self, text: str, prosody: float | None = None) -> float:
        """Semantic score, blended with a prosody cue (0..1) when there is one."""
        semantic = semantic_score(text)
        if prosody is None or not 0 <= prosody <= 1:
            return semantic
        w = self.config.prosody_weight
        return (1 - w) * semantic + w * prosody

    def silence_threshold_ms(self, text: str, prosody: float | None = None) -> float:
        c = self.config
        span = c.complete_score - c.incomplete_score
        completeness = min(1.0, max(0.0, (self.score(text, prosody) - c.incomplete_score) / span))
        base = c.max_silence_ms - (c.max_silence_ms - c.min_silence_ms) * completeness
        # Scale only the part above the minimum: a finished question stays fast for everyone,
        # while mid-sentence waits follow how long this speaker usually pauses.
        return c.min_silence_ms + (base - c.min_silence_ms) * self.speaker_factor

    def is_end_of_turn(self, text: str, silence_ms: float, prosody: float | None = None) -> bool:
        return bool(words(text)) and silence_ms >= self.silence_threshold_ms(text, prosody)
