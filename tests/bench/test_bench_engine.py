"""`cadence bench capacity --engine llama-cpp`: a real llama.cpp server, and a config on it."""

from __future__ import annotations

import contextlib

import pytest

from cadence.bench.engine import llama_cpp_engine
from cadence.config import load_config
from cadence.llm.base import ChatMessage
from cadence.llm.factory import make_llm

pytestmark = pytest.mark.models


async def test_the_started_engine_answers_through_the_config_it_writes() -> None:
    pytest.importorskip("llama_cpp.server", reason="needs llama-cpp-python[server]")
    async with llama_cpp_engine(threads=1) as config_path:
        profile = load_config(config_path).profile()
        assert profile.llm["backend"] == "openai" and profile.llm["json_mode"] == "json_object"
        llm = make_llm(profile.llm)
        try:
            await llm.warm("You are a helpful assistant. Answer in one short sentence.")
            messages = [
                ChatMessage("system", "You are a helpful assistant. Answer in one short sentence."),
                ChatMessage("user", "What is the capital of France?"),
            ]
            async with contextlib.aclosing(llm.stream(messages)) as deltas:
                reply = "".join([d async for d in deltas])
            assert "paris" in reply.lower(), reply
        finally:
            await llm.aclose()
    assert not config_path.exists()  # the temporary config went with the engine
