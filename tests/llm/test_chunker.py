"""Clause chunker: table-driven cases on tricky text, and split-invariance under hypothesis.

No event loop, no clock: the chunker is a plain object fed strings.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cadence.errors import ConfigError
from cadence.llm.chunker import ChunkerOptions, ClauseChunker, normalize_for_speech


def chunk(text: str, options: ChunkerOptions | None = None) -> list[str]:
    chunker = ClauseChunker(options)
    return chunker.push(text) + chunker.flush()


def chunk_in_parts(parts: list[str], options: ChunkerOptions | None = None) -> list[str]:
    chunker = ClauseChunker(options)
    pieces: list[str] = []
    for part in parts:
        pieces += chunker.push(part)
    return pieces + chunker.flush()


CASES = [
    pytest.param(
        "The capital of France is Paris, a lovely city. It is big.",
        ["The capital of France is Paris,", "a lovely city.", "It is big."],
        id="first-clause-at-comma",
    ),
    pytest.param(
        "Well, I think it is Paris. Yes.",
        ["Well, I think it is Paris.", "Yes."],
        id="comma-before-min-words-does-not-cut",
    ),
    pytest.param("Yes! It is Paris.", ["Yes!", "It is Paris."], id="short-sentence-first"),
    pytest.param(
        "Dr. Smith and Mr. Jones met Mrs. Brown. They talked.",
        ["Dr. Smith and Mr. Jones met Mrs. Brown.", "They talked."],
        id="titles",
    ),
    pytest.param(
        "Fruit is good. Try e.g. apples or i.e. anything sweet. Fine.",
        ["Fruit is good.", "Try e.g. apples or i.e. anything sweet.", "Fine."],
        id="e.g.-i.e.",
    ),
    pytest.param(
        "Hi. She moved to the U.S. in 2010 and loved it. Then she left.",
        ["Hi.", "She moved to the U.S. in 2010 and loved it.", "Then she left."],
        id="initialism-mid-sentence",
    ),
    pytest.param(
        "Hi. She lives in the U.S. Her sister does too.",
        ["Hi.", "She lives in the U.S.", "Her sister does too."],
        id="initialism-ends-sentence",
    ),
    pytest.param(
        "Pi is 3.14 or so. It costs $2.50 today. About 1,000 people came.",
        ["Pi is 3.14 or so.", "It costs $2.50 today.", "About 1,000 people came."],
        id="numbers",
    ),
    pytest.param(
        "Ok. The meeting is at 10:30 today. Ratio 3:2 wins.",
        ["Ok.", "The meeting is at 10:30 today.", "Ratio 3:2 wins."],
        id="times-and-ratios",
    ),
    pytest.param(
        "Ok. Meet at 10 a.m. tomorrow. It opens at 9 a.m. Bring tea.",
        ["Ok.", "Meet at 10 a.m. tomorrow.", "It opens at 9 a.m.", "Bring tea."],
        id="a.m.",
    ),
    pytest.param(
        "Ok. Well... I am not sure. Wait… maybe.",
        ["Ok.", "Well... I am not sure.", "Wait… maybe."],
        id="ellipses",
    ),
    pytest.param(
        "Ok. Write to jane.doe@example.com or see https://example.com/a.b?x=1,2 now. Bye.",
        ["Ok.", "Write to jane.doe@example.com or see https://example.com/a.b?x=1,2 now.", "Bye."],
        id="email-and-url",
    ),
    pytest.param(
        'He said "stop." Then he went home (slowly.) Fine.',
        ['He said "stop."', "Then he went home (slowly.)", "Fine."],
        id="closing-quotes",
    ),
    pytest.param(
        "Think of J. K. Rowling. Fine.",
        ["Think of J. K. Rowling.", "Fine."],
        id="initials",
    ),
    pytest.param(
        "The answer is simple - it is Paris. Yes.",
        ["The answer is simple -", "it is Paris.", "Yes."],
        id="spaced-dash",
    ),
    pytest.param(
        "one two three four five six seven eight nine ten eleven",
        ["one two three four five six seven eight", "nine ten eleven"],
        id="no-punctuation-first-piece",
    ),
    pytest.param(
        "**Sure!** Here are some ideas:\n\n- **Apples** 🍎\n- Pears\n\n1. One thing\n## Tips\nok",
        ["Sure!", "Here are some ideas:", "Apples", "Pears", "One thing", "Tips", "ok"],
        id="markdown-and-emoji",
    ),
    pytest.param("Use `pip install x` now.", ["Use pip install x now."], id="backticks"),
    pytest.param("Two * three is six.", ["Two * three is six."], id="lone-star-kept"),
    pytest.param("🎉🎉 ", [], id="only-emoji"),
    pytest.param("", [], id="empty"),
    pytest.param("   \n\n ", [], id="only-whitespace"),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_pieces(text: str, expected: list[str]) -> None:
    assert chunk(text) == expected
    assert chunk_in_parts(list(text)) == expected


def test_long_sentence_is_cut_at_a_clause_mark() -> None:
    options = ChunkerOptions(max_chars=60)
    text = (
        "Ok. The first part of this long sentence runs on for a while, "
        "and then the second part also keeps going until it ends."
    )
    pieces = chunk(text, options)
    assert pieces == [
        "Ok.",
        "The first part of this long sentence runs on for a while,",
        "and then the second part also keeps going until it ends.",
    ]


def test_text_without_punctuation_is_cut_at_word_boundaries() -> None:
    options = ChunkerOptions(max_chars=40)
    text = " ".join(["word"] * 60)
    pieces = chunk(text, options)
    assert pieces[0] == " ".join(["word"] * options.first_clause_max_words)
    assert all(len(piece) <= 40 for piece in pieces)
    assert " ".join(pieces) == text


def test_a_word_longer_than_max_chars_is_not_split() -> None:
    url = "https://example.com/" + "a" * 80
    assert chunk(f"Ok. See {url} now.", ChunkerOptions(max_chars=40)) == [
        "Ok.",
        "See",
        url,
        "now.",
    ]


def test_period_waits_for_the_next_word_then_cuts_early() -> None:
    chunker = ClauseChunker()
    assert chunker.push("Yes.") == []  # "Yes." might be "Yes. that" - wait for one letter
    assert chunker.push(" T") == ["Yes."]
    assert chunker.push("he end") == []
    assert chunker.flush() == ["The end"]


def test_flush_resets_for_the_next_reply() -> None:
    chunker = ClauseChunker()
    chunker.push("one two three four, five")
    chunker.flush()
    assert chunker.push("alpha beta gamma delta, epsilon ") == ["alpha beta gamma delta,"]


def test_reset_drops_buffered_text() -> None:
    chunker = ClauseChunker()
    chunker.push("Half a thought")
    chunker.reset()
    assert chunker.flush() == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"first_clause_min_words": 0},
        {"first_clause_min_words": 5, "first_clause_max_words": 4},
        {"max_chars": 3},
    ],
)
def test_bad_options_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ConfigError):
        ChunkerOptions(**kwargs)


def test_normalize_for_speech() -> None:
    spoken = normalize_for_speech("# Title\n\n* **Bold** _it_ 👍🏽\n> quoted")
    assert spoken == "Title Bold it quoted"
    assert normalize_for_speech("a  \n b\t c") == "a b c"


VOCABULARY = [
    *"Paris the city is big Dr. Mr. e.g. U.S. a.m. etc. 3.14 1,000 $2.50 10:30".split(),
    *"well, so; note: - — wait... hmm… yes. Yes. no! why? jane@x.org https://a.io/b.c".split(),
    *'**bold** 🎉 # ## 1. * J. "quoted." (aside) done.)'.split(),
    "x" * 30,
]
SEPARATORS = [" ", " ", " ", "  ", "\n", "\n\n", "\t", " \n "]


@st.composite
def texts_and_cuts(draw: st.DrawFn) -> tuple[str, list[str]]:
    words = draw(st.lists(st.sampled_from(VOCABULARY), max_size=60))
    text = ""
    for word in words:
        text += draw(st.sampled_from(SEPARATORS)) + word
    if draw(st.booleans()):
        text += draw(st.sampled_from(SEPARATORS))
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=30)))
    bounds = [0, *cuts, len(text)]
    parts = [text[a:b] for a, b in itertools.pairwise(bounds)]
    return text, parts


@settings(max_examples=300, deadline=None)
@given(texts_and_cuts(), st.sampled_from([ChunkerOptions(), ChunkerOptions(2, 4, 40)]))
def test_any_split_gives_the_same_pieces(
    text_parts: tuple[str, list[str]], options: ChunkerOptions
) -> None:
    text, parts = text_parts
    whole = chunk(text, options)
    assert chunk_in_parts(parts, options) == whole
    assert " ".join(whole) == normalize_for_speech(text)
    assert all(piece and piece == piece.strip() for piece in whole)
    for piece in whole:
        assert len(piece) <= options.max_chars or " " not in piece
    if whole:
        assert len(whole[0].split()) <= options.first_clause_max_words


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200), st.lists(st.integers(0, 200), max_size=20))
def test_arbitrary_unicode_never_loses_text(text: str, cuts: list[int]) -> None:
    bounds = [0, *sorted(min(cut, len(text)) for cut in cuts), len(text)]
    parts = [text[a:b] for a, b in itertools.pairwise(bounds)]
    whole = chunk(text)
    assert chunk_in_parts(parts) == whole
    assert " ".join(whole) == normalize_for_speech(text)
