"""Routing: does this turn need vision? Text-only turns must never pay for frames.

A small rule on the transcript (deictic and visual words), plus explicit images attached.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cadence.video.samplers import time_references

# Each pattern names a way people ask about what they show; the first match is the reason.
_VISUAL_PATTERNS: tuple[tuple[str, str], ...] = (
    ("see", r"\b(what|who|how many|can|do) (do |can )?(you|u) (see|spot|notice)\b"),
    ("see", r"\bwhat('s| is) (in front of|behind) me\b|\bcan you see\b|\bdo you see\b"),
    ("look", r"\b(look|looking) at (this|that|these|those|it|my|the)\b|\btake a look\b"),
    ("read", r"\bwhat (does|do|did) (this|that|these|those|it|the \w+)( \w+)? (say|read|show)\b"),
    ("read", r"\b(read|reading) (this|that|it|the \w+|me|out)\b"),
    ("read", r"\b(written|printed|displayed|typed|handwritten)\b"),
    ("object", r"\bthe (sign|label|poster|menu|board|whiteboard|note|screen|display|letter|"
               r"notice|banner|receipt|ticket|package)\b"),
    ("screen", r"\bon (my|the|this) (screen|display|monitor|page|window|slide)\b"),
    ("screen", r"\b(my|the|this) (screen|display|screenshot|window|tab|slide)\b"),
    ("deictic", r"\b(this|that|these|those) (sign|label|thing|object|picture|photo|image|"
                r"paper|page|document|menu|poster|screen|code|error|text|word|card|box|"
                r"bottle|book|plant|colou?r|one|shirt|chart|graph|diagram)\b"),
    ("holding", r"\b(am i|i'm|im|i am) (holding|wearing|showing|pointing at|looking at)\b"),
    ("show", r"\b(i'?m showing|let me show|i am showing|showing you|can you tell what)\b"),
    ("camera", r"\b(camera|webcam|picture|photo|image|video|frame)\b"),
    ("colour", r"\bwhat colou?r\b"),
    ("what-is-this", r"\bwhat('s| is) (this|that)\b(?! (mean|called when))"),
    ("change", r"\bwhat (changed|happened|moved)\b|\bdid (it|that|anything) (change|move)\b"),
)
_COMPILED = tuple((why, re.compile(p, re.IGNORECASE)) for why, p in _VISUAL_PATTERNS)


@dataclass(frozen=True)
class Route:
    visual: bool
    reason: str
    time_offsets_s: tuple[float, ...] = ()


def route_turn(question: str, *, images_attached: bool = False) -> Route:
    """Visual when images came with the turn or the words point at something shown."""
    offsets = time_references(question)
    if images_attached:
        return Route(True, "images attached", offsets)
    for why, pattern in _COMPILED:
        if pattern.search(question):
            return Route(True, why, offsets)
    if offsets and re.search(r"\b(happen|change|move|show|was|were|see)", question, re.I):
        return Route(True, "time reference", offsets)
    return Route(False, "text only")
