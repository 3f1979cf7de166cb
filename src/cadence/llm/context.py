"""Fit a conversation into a model's context window by dropping the oldest turns first.

The system prompt always stays first and unchanged, so a warm prefix cache stays valid.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cadence.errors import ConfigError, LimitExceeded
from cadence.llm.base import ChatMessage

# ChatML wraps each message in "<|im_start|>role\n" ... "<|im_end|>\n": about five tokens.
DEFAULT_MESSAGE_OVERHEAD_TOKENS = 5


@dataclass(frozen=True)
class FittedContext:
    """The messages to send (system first) and how many history messages were left out."""

    messages: tuple[ChatMessage, ...]
    dropped: int
    tokens: int  # estimated prompt tokens, template overhead included


def message_tokens(
    message: ChatMessage,
    count_tokens: Callable[[str], int],
    overhead: int = DEFAULT_MESSAGE_OVERHEAD_TOKENS,
) -> int:
    """Tokens one message costs: its text, its template wrapper, and its images/audio."""
    media = sum(part.tokens or 0 for part in (*message.images, *message.audio))
    return count_tokens(message.content) + overhead + media


def _turns(history: Sequence[ChatMessage]) -> list[list[ChatMessage]]:
    """Group history into turns, each starting at a user message (tool output stays inside)."""
    turns: list[list[ChatMessage]] = []
    for message in history:
        if message.role == "user" or not turns:
            turns.append([message])
        else:
            turns[-1].append(message)
    return turns


def _units(turn: list[ChatMessage]) -> list[list[ChatMessage]]:
    """Split a turn into a message plus the tool outputs that answer it."""
    units: list[list[ChatMessage]] = []
    for message in turn:
        if message.role == "tool" and units:
            units[-1].append(message)
        else:
            units.append([message])
    return units


def fit_context(
    system: ChatMessage,
    history: Sequence[ChatMessage],
    count_tokens: Callable[[str], int],
    window: int,
    reserve_for_reply: int,
    *,
    message_overhead: int = DEFAULT_MESSAGE_OVERHEAD_TOKENS,
) -> FittedContext:
    """Keep the system prompt and the newest history that fits `window - reserve_for_reply`.

    Whole turns (a user message and everything up to the next one) are dropped oldest
    first. If the newest turn alone does not fit, its oldest parts go, a tool call always
    together with its output; its last message is never dropped. Raises `ConfigError`
    when the system prompt and the reserve leave no room, and `LimitExceeded` when the
    newest message alone is too long.
    """
    budget = window - reserve_for_reply - message_overhead  # the "assistant" prompt opener
    system_cost = message_tokens(system, count_tokens, message_overhead)
    if system_cost > budget:
        raise ConfigError(
            f"the system prompt ({system_cost} tokens) and the reply reserve "
            f"({reserve_for_reply}) do not fit the {window}-token context window: "
            "shorten the system prompt, lower max_tokens, or use a larger n_ctx"
        )

    def cost(messages: list[ChatMessage]) -> int:
        return sum(message_tokens(m, count_tokens, message_overhead) for m in messages)

    turns = [[(unit, cost(unit)) for unit in _units(turn)] for turn in _turns(history)]
    total = system_cost + sum(c for turn in turns for _, c in turn)
    dropped = 0
    while total > budget and turns:
        # Drop a whole old turn, or, for the newest turn, its oldest unit but never its last.
        if len(turns) > 1:
            gone = turns.pop(0)
        elif len(turns[0]) > 1:
            gone = [turns[0].pop(0)]
        else:
            break
        total -= sum(c for _, c in gone)
        dropped += sum(len(unit) for unit, _ in gone)
    if total > budget:
        raise LimitExceeded(
            f"the latest message needs {total - system_cost} tokens but only "
            f"{budget - system_cost} are free in the {window}-token window: "
            "shorten the message or raise n_ctx"
        )
    kept = [message for turn in turns for unit, _ in turn for message in unit]
    return FittedContext(messages=(system, *kept), dropped=dropped, tokens=total + message_overhead)
