"""The history sent to the model: cut by half a window at once, so its prefix (and the
model's KV cache of it) stays the same for the following turns."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from cadence.agent.history import REPLY_RESERVE_TOKENS, History
from cadence.llm.base import ChatMessage

SYSTEM = ChatMessage("system", "Be brief.")


@dataclass
class WordLLM:
    context_window: int = REPLY_RESERVE_TOKENS + 200
    name: str = "words"

    def count_tokens(self, text: str) -> int:
        return len(text.split())


def test_the_prompt_keeps_its_first_message_until_the_window_is_full_again() -> None:
    history, llm = History(), WordLLM()
    starts: list[str] = []
    for turn in range(30):
        history.add_user(f"question {turn} " + "word " * 8)
        history.add_assistant(f"answer {turn} " + "word " * 8)
        prompt = history.fit(SYSTEM, history.messages(), llm)  # type: ignore[arg-type]
        assert prompt[0] == SYSTEM
        assert sum(llm.count_tokens(m.content) + 4 for m in prompt) <= llm.context_window
        starts.append(prompt[1].content)
    changes = sum(1 for a, b in itertools.pairwise(starts) if a != b)
    assert changes <= 6, starts  # a cut every few turns, not one per turn
    assert starts[-1].startswith("question 2")  # the newest turns are always there
    assert history.dropped_for_context > 0
