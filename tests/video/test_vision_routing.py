"""Routing: visual questions get frames, everything else never pays for vision."""

from __future__ import annotations

import pytest

from cadence.video.routing import route_turn

VISUAL = [
    "What does the sign say?", "what does this say", "What do you see?", "Can you see me?",
    "What's on my screen?", "Can you read this for me?", "What colour is my shirt?",
    "What am I holding?", "Look at this error, what's wrong?", "What is this thing?",
    "How many fingers am I holding up?", "What does that label read?",
    "What changed on the screen?", "What happened two seconds ago?", "Describe the picture",
    "Is this plant healthy?", "what's in front of me", "What is written on the sign?",
    "What does the label on the bottle say?", "Read the menu to me",
]
TEXT_ONLY = [
    "What is the weather like today?", "What is the capital of France?", "Tell me a joke",
    "How do I boil an egg?", "Thanks, that's all", "Set a timer for five minutes",
    "What does photosynthesis mean?", "Who wrote Hamlet?", "Can you say that again?",
    "Who wrote the book Dune?", "What is the largest ocean?",
]


@pytest.mark.parametrize("question", VISUAL)
def test_visual_questions_are_routed_to_vision(question):
    assert route_turn(question).visual, question


@pytest.mark.parametrize("question", TEXT_ONLY)
def test_text_questions_are_not(question):
    assert not route_turn(question).visual, question


def test_attached_images_always_route_and_time_references_ride_along():
    assert route_turn("hmm", images_attached=True).reason == "images attached"
    route = route_turn("What was on the screen three seconds ago?")
    assert route.visual and route.time_offsets_s == (3.0,)
