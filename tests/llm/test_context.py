"""fit_context: the system prompt stays, the oldest turns go first, tool calls keep their output.

Token counts come from a word counter, so every budget below can be checked by hand.
"""

from __future__ import annotations

import pytest

from cadence.errors import ConfigError, LimitExceeded
from cadence.llm.base import ChatMessage, ImagePart
from cadence.llm.context import FittedContext, fit_context, message_tokens


def words(text: str) -> int:
    return len(text.split())


SYSTEM = ChatMessage("system", "be brief")  # 2 words + 1 overhead = 3


def user(text: str) -> ChatMessage:
    return ChatMessage("user", text)


def assistant(text: str) -> ChatMessage:
    return ChatMessage("assistant", text)


def tool(text: str) -> ChatMessage:
    return ChatMessage("tool", text, name="lookup")


def fit(history: list[ChatMessage], window: int, reserve: int = 0) -> FittedContext:
    return fit_context(SYSTEM, history, words, window, reserve, message_overhead=1)


HISTORY = [
    user("one two"),  # 3
    assistant("three four five"),  # 4
    user("six"),  # 2
    assistant("seven eight"),  # 3
    user("nine ten"),  # 3
]


@pytest.mark.parametrize(
    ("window", "expected_kept", "expected_dropped"),
    [
        (100, HISTORY, 0),
        (1 + 3 + 15, HISTORY, 0),  # exactly fits: opener + system + all
        (1 + 3 + 14, HISTORY[2:], 2),  # one token short: the whole first turn goes
        (1 + 3 + 8, HISTORY[2:], 2),
        (1 + 3 + 7, HISTORY[4:], 4),
        (1 + 3 + 3, HISTORY[4:], 4),
    ],
)
def test_oldest_turns_are_dropped_first(
    window: int, expected_kept: list[ChatMessage], expected_dropped: int
) -> None:
    fitted = fit(HISTORY, window)
    assert fitted.messages == (SYSTEM, *expected_kept)
    assert fitted.dropped == expected_dropped
    assert fitted.tokens <= window


def test_system_prompt_is_first_and_unchanged() -> None:
    fitted = fit(HISTORY, 9)
    assert fitted.messages[0] is SYSTEM


def test_reserve_for_reply_is_left_free() -> None:
    assert fit(HISTORY, 19, reserve=0).dropped == 0
    assert fit(HISTORY, 19, reserve=1).dropped == 2
    assert fit(HISTORY, 19 + 10, reserve=10).tokens + 10 <= 29


def test_tool_call_and_output_are_dropped_together() -> None:
    history = [
        user("weather please"),  # 3
        assistant("calling lookup"),  # 3
        tool("sunny twenty degrees"),  # 4
        assistant("it is sunny"),  # 4
    ]
    # Newest (only) turn is too long: its oldest units go, the call with its output.
    fitted = fit(history, 1 + 3 + 11)
    assert fitted.messages == (SYSTEM, *history[1:])
    assert fitted.dropped == 1
    fitted = fit(history, 1 + 3 + 8)
    assert fitted.messages == (SYSTEM, history[3])
    assert fitted.dropped == 3
    assert all(m.role != "tool" for m in fitted.messages)


def test_no_tool_output_is_left_without_its_call() -> None:
    history = [
        user("a"),
        assistant("call"),
        tool("out put"),
        user("b"),
        assistant("call"),
        tool("out"),
        user("c"),
    ]
    for window in range(8, 30):
        try:
            kept = fit(history, window).messages[1:]
        except LimitExceeded:
            continue
        for index, message in enumerate(kept):
            if message.role == "tool":
                assert index > 0 and kept[index - 1].role == "assistant"


def test_latest_message_too_long_is_refused() -> None:
    with pytest.raises(LimitExceeded, match="latest message"):
        fit([user("a b c d e f g h")], 1 + 3 + 5)


def test_system_prompt_too_long_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="system prompt"):
        fit([], 1 + 2)


def test_empty_history() -> None:
    fitted = fit([], 10)
    assert fitted.messages == (SYSTEM,)
    assert fitted.dropped == 0
    assert fitted.tokens == 1 + 3


def test_media_tokens_are_counted() -> None:
    image = ImagePart(b"png", tokens=64)
    message = ChatMessage("user", "look", images=(image,))
    assert message_tokens(message, words, overhead=5) == 1 + 5 + 64
