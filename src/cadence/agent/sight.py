"""What the agent sees: a session's recent frames and how they join a turn's prompt.

Turns that need no vision never pay for it (the router decides); visual turns get the
sampled frames as untrusted scene text (the CPU default) or as images for a VLM.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cadence.config import Profile
from cadence.llm.base import ChatMessage, LLMBackend
from cadence.video.context import VisionContext
from cadence.video.frames import FrameBuffer, VideoFrame
from cadence.video.samplers import make_sampler
from cadence.video.scene import SceneReader
from cadence.video.sources import image_frame

_shared_reader: SceneReader | None = None


def shared_scene_reader() -> SceneReader:
    """One OCR engine per process: sessions share it (it is thread-safe and cached)."""
    global _shared_reader
    if _shared_reader is None:
        _shared_reader = SceneReader(threads=1)
    return _shared_reader


class SessionVision:
    def __init__(self, profile: Profile, llm: LLMBackend) -> None:
        self.frames = FrameBuffer()
        self._profile = profile
        self._llm = llm
        self._context: VisionContext | None = None
        self._images_attached = False

    def push_frame(self, frame: VideoFrame) -> bool:
        return self.frames.push(frame)

    def add_image(self, data: bytes, time_s: float) -> None:
        """A still image sent by the client; raises ImageError when it is unusable."""
        self.frames.push(image_frame(data, time_s=time_s, source="image"))
        self._images_attached = True

    def _vision(self) -> VisionContext:
        if self._context is None:
            table = dict(self._profile.vlm)
            count: Callable[[str], int] = self._llm.count_tokens
            if table.get("backend", "scene") == "scene":
                self._context = VisionContext(
                    "scene",
                    sampler=make_sampler(dict(self._profile.sampler) or None),
                    reader=shared_scene_reader(),
                    context_window=self._llm.context_window,
                    count_tokens=count,
                )
            else:
                cost = getattr(self._llm, "cost", None)
                self._context = VisionContext.from_config(
                    table,
                    self._profile.sampler,
                    context_window=self._llm.context_window,
                    count_tokens=count,
                    cost=cost,
                )
        return self._context

    async def apply(
        self, question: str, messages: list[ChatMessage]
    ) -> tuple[list[ChatMessage], dict[str, Any] | None]:
        """Messages with this turn's vision added, and the vision metrics (None: no frames)."""
        if not self.frames.frames() or not question:
            return messages, None
        turn = await self._vision().for_turn(
            question, self.frames.frames(), images_attached=self._images_attached
        )
        if turn.visual:
            self._images_attached = False
        return turn.apply(messages), turn.metrics.as_dict()
