"""Samplers on generated video: a static scene, a cut, motion and a scroll."""

from __future__ import annotations

import pytest
from video_synth import cut, motion, scroll, static

from cadence.errors import ConfigError
from cadence.video.frames import histogram_distance, perceptual_distance
from cadence.video.samplers import (
    Adaptive,
    FixedRate,
    OnQuestion,
    SceneChange,
    Timestamps,
    make_sampler,
    time_references,
)


def test_measures_separate_cuts_from_motion_and_scrolls():
    s, c, m, sc = static(), cut(), motion(), scroll()
    assert histogram_distance(s[0], s[-1]) < 0.02 and perceptual_distance(s[0], s[-1]) == 0
    assert histogram_distance(c[0], c[-1]) > 0.5  # a cut changes the colours
    assert histogram_distance(m[0], m[25]) < 0.1  # motion barely does…
    assert perceptual_distance(m[0], m[25]) > 0.05  # …but the picture moved
    assert perceptual_distance(sc[0], sc[1]) > 0.3  # a scroll moves most of the picture


def test_scene_change_keeps_one_frame_of_a_static_scene():
    picked = SceneChange().select(static(), None, 8)
    assert len(picked) == 1


def test_scene_change_catches_the_cut():
    frames = cut(at_s=3.0)
    picked = SceneChange().select(frames, None, 8)
    assert [round(f.time_s, 1) for f in picked] == [0.0, 3.0]


def test_histogram_scene_change_ignores_motion_but_perceptual_follows_it():
    frames = motion()
    assert len(SceneChange(metric="histogram").select(frames, None, 20)) <= 2
    assert len(SceneChange(metric="perceptual", threshold=0.05).select(frames, None, 20)) >= 4


def test_perceptual_scene_change_follows_a_scroll():
    picked = SceneChange(metric="perceptual", threshold=0.3).select(scroll(), None, 20)
    assert len(picked) >= 4
    assert picked == sorted(picked, key=lambda f: f.time_s)


def test_adaptive_takes_more_frames_under_motion_and_respects_the_cap():
    sampler = Adaptive()
    still = sampler.select(static(), None, 20)
    moving = sampler.select(motion(), None, 20)
    assert len(still) <= 3 < len(moving)
    capped = sampler.select(motion(), None, 3)
    assert len(capped) == 3
    assert capped[-1].time_s == pytest.approx(motion()[-1].time_s)  # the newest survives


def test_fixed_rate_walks_back_from_the_question():
    picked = FixedRate(fps=1.0, window_s=4.0).select(static(), 5.0, 10)
    assert [round(f.time_s, 1) for f in picked] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert len(FixedRate(fps=1.0, window_s=4.0).select(static(), 5.0, 2)) == 2


def test_on_question_takes_the_freshest_frame_before_the_question():
    frames = static()
    assert OnQuestion().select(frames, 2.05, 4)[0].time_s == pytest.approx(2.0)
    assert OnQuestion().select(frames, None, 4)[0] is frames[-1]
    assert OnQuestion().select([], None, 4) == []


def test_timestamps_select_what_was_there_two_seconds_ago():
    frames = cut(at_s=3.0)
    picked = Timestamps((2.0, 0.0)).select(frames, 4.5, 4)
    assert [round(f.time_s, 1) for f in picked] == [2.5, 4.5]
    assert histogram_distance(picked[0], frames[0]) < 0.05  # before the cut


@pytest.mark.parametrize(("question", "offsets"), [
    ("What happened two seconds ago?", (2.0,)),
    ("what was on screen 5 seconds ago", (5.0,)),
    ("and a minute ago?", (60.0,)),
    ("what did you see just now", (1.0,)),
    ("What does the sign say?", ()),
])
def test_time_references(question, offsets):
    assert time_references(question) == offsets


def test_samplers_are_chosen_by_name_with_parameters():
    assert make_sampler(None).name == "on_question"
    s = make_sampler({"name": "scene_change", "threshold": 0.4, "metric": "perceptual"})
    assert isinstance(s, SceneChange) and s.threshold == 0.4
    assert make_sampler({"name": "timestamps", "offsets_s": [2, 0]}).offsets_s == (2.0, 0.0)
    with pytest.raises(ConfigError, match="unknown sampler"):
        make_sampler("every_frame")
    with pytest.raises(ConfigError, match="bad parameters"):
        make_sampler({"name": "fixed_rate", "speed": 3})
    with pytest.raises(ConfigError, match="metric"):
        make_sampler({"name": "scene_change", "metric": "vibes"})
