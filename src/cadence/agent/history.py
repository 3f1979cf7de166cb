"""The conversation as the model will see it: only what was said and actually heard.

Assistant turns are committed by the turn controller with the played text only, so after
a barge-in the history never holds words the user did not hear.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cadence.llm.base import ChatMessage, LLMBackend
from cadence.llm.context import fit_context

REPLY_RESERVE_TOKENS = 160
MAX_MESSAGES = 200  # bound memory on very long sessions; the context fit trims further


@dataclass
class History:
    items: list[ChatMessage] = field(default_factory=list)
    dropped_for_context: int = 0

    def add_user(self, text: str) -> None:
        if text.strip():
            self._append(ChatMessage("user", text.strip()))

    def add_assistant(self, text: str) -> None:
        if text.strip():
            self._append(ChatMessage("assistant", text.strip()))

    def add(self, message: ChatMessage) -> None:
        self._append(message)

    def _append(self, message: ChatMessage) -> None:
        self.items.append(message)
        del self.items[:-MAX_MESSAGES]

    def messages(self) -> list[ChatMessage]:
        return list(self.items)

    def fit(
        self, system: ChatMessage, messages: list[ChatMessage], llm: LLMBackend
    ) -> list[ChatMessage]:
        """System prompt first, then as many of the newest messages as the window allows."""
        result = fit_context(
            system, messages, llm.count_tokens, llm.context_window, REPLY_RESERVE_TOKENS
        )
        self.dropped_for_context += result.dropped
        return list(result.messages)
