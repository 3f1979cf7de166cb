"""Video for the agent: frames, samplers, the preprocessing contract, the scene reader.

`VisionContext.for_turn(question, frames)` is the one call a session makes per turn.
"""

from cadence.video.budget import FramePlan, VisualBudget, plan_frames
from cadence.video.context import VisionContext, VisionMetrics, VisionTurn
from cadence.video.frames import FrameBuffer, VideoFrame
from cadence.video.images import Resize, decode_image, parse_data_url
from cadence.video.routing import Route, route_turn
from cadence.video.samplers import (
    Adaptive,
    FixedRate,
    OnQuestion,
    Sampler,
    SceneChange,
    Timestamps,
    make_sampler,
)
from cadence.video.scene import SceneFacts, SceneReader
from cadence.video.sources import data_url_frame, file_frames, image_frame, track_frames
from cadence.video.tokens import CostModel, ImageCost, cost_model

__all__ = [
    "Adaptive", "CostModel", "FixedRate", "FrameBuffer", "FramePlan", "ImageCost", "OnQuestion",
    "Resize", "Route", "Sampler", "SceneChange", "SceneFacts", "SceneReader", "Timestamps",
    "VideoFrame", "VisionContext", "VisionMetrics", "VisionTurn", "VisualBudget", "cost_model",
    "data_url_frame", "decode_image", "file_frames", "image_frame", "make_sampler",
    "parse_data_url", "plan_frames", "route_turn", "track_frames",
]
