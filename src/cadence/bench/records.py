"""One measured turn of the benchmark, and how its words are scored (WER, expected answer).

A `TurnRecord` is what lands in the JSON file: client-side timings, the server's latency
record, and what was said, heard and answered.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import jiwer

# Server stages, in timeline order (INTERFACES "Latency record"); ms after end of user speech.
SERVER_STAGES = (
    "endpoint",
    "asr_final",
    "vlm_first_token",
    "llm_first_token",
    "first_clause",
    "tts_first_audio",
)
_SMALL_NUMBERS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty"
).split()


@dataclass
class TurnRecord:
    scenario: str
    session: int
    trial: int
    cue: int
    kind: str  # question | barge_in | backchannel
    voice: str
    speed: float
    snr_db: float
    said: str
    expect: str | None = None
    heard: str | None = None  # the server's final transcript of this utterance
    wer: float | None = None
    reply: str | None = None
    answered: bool = False  # reply audio reached the client
    correct: bool | None = None  # the reply matched `expect` (None: nothing expected)
    v2v_ms: float | None = None  # end of speech → first reply audio at the client
    barge_in_stop_ms: float | None = None  # speech start → last agent audio played
    agent_was_speaking: bool | None = None  # at this utterance's start (barge-in, backchannel)
    continued: bool | None = None  # backchannel: the agent kept its reply going
    status: str | None = None  # the reply's final status
    false_starts: int = 0  # replies to this utterance that were cancelled and replaced
    talked_over: bool = False  # the reply's audio started before the user had finished
    server: dict[str, Any] = field(default_factory=dict)  # the latency record, as sent
    mic_late_ms: float = 0.0  # worst lateness of the simulated mic in this trial
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TurnRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def held(self) -> bool:
        """The first audio was a holding phrase ("One moment…"), not the answer: the server
        said it because the answer was late (its latency record names the degrade)."""
        degraded = self.server.get("degraded") or []
        return any(str(d).endswith("quick_acknowledgement") for d in degraded)

    def stage(self, name: str) -> float | None:
        """A metric of this turn by name: client `v2v`, `barge_in_stop`, or a server stage."""
        if name == "v2v":
            return self.v2v_ms
        if name == "barge_in_stop":
            return self.barge_in_stop_ms
        if name == "server_v2v":
            return _number(self.server.get("v2v"))
        if name == "tts_after_clause":
            tts, clause = (
                _number(self.server.get("tts_first_audio")),
                _number(self.server.get("first_clause")),
            )
            return None if tts is None or clause is None else tts - clause
        if name == "transport":
            server = _number(self.server.get("v2v"))
            return None if server is None or self.v2v_ms is None else self.v2v_ms - server
        return _number(self.server.get(name))


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def normalize(text: str) -> str:
    """Lower case, digits 0-20 as words, no punctuation: what WER and answer checks compare."""
    text = text.lower().replace("-", " ")
    text = re.sub(r"\b(\d+)\b", lambda m: _number_word(m.group(1)), text)
    text = re.sub(r"[^a-z0-9' ]+", " ", text)
    return " ".join(text.split())


def _number_word(digits: str) -> str:
    n = int(digits)
    return _SMALL_NUMBERS[n] if n < len(_SMALL_NUMBERS) else digits


def word_error_rate(said: str, heard: str | None) -> float | None:
    reference = normalize(said)
    if not reference:
        return None
    hypothesis = normalize(heard or "")
    if not hypothesis:
        return 1.0  # nothing recognised: every word was deleted
    return float(jiwer.wer(reference, hypothesis))


def matches(expect: str | None, reply: str | None) -> bool | None:
    if expect is None:
        return None
    if not reply:
        return False
    return re.search(expect, reply, re.IGNORECASE) is not None or (
        re.search(expect, normalize(reply), re.IGNORECASE) is not None
    )
