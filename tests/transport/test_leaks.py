"""No leak per session: real sessions (real models) in an in-process server, opened, talked to
and closed, leave threads, fds, asyncio tasks and the Session objects as they found them.

The baseline is taken after one warm-up session: thread pools (ASR/TTS/LLM workers) start on
first use and stay, which is growth once, not per session.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import websockets
from transport_harness import MODEL_TEST_CONFIG, Running, running_server

from cadence.agent.runtime import Runtime
from cadence.config import Profile

pytestmark = [pytest.mark.models, pytest.mark.asyncio(loop_scope="session")]
SESSIONS = 3
TURN_TIMEOUT_S = 60.0
SETTLE_S = 10.0
QUESTION = "What is the capital of France?"


@dataclass(frozen=True)
class Usage:
    threads: int
    fds: int
    tasks: int

    def within(self, baseline: Usage) -> bool:
        return (
            self.threads <= baseline.threads
            and self.fds <= baseline.fds
            and self.tasks <= baseline.tasks
        )


def usage() -> Usage:
    status = Path("/proc/self/status").read_text()
    threads = int(next(ln for ln in status.splitlines() if ln.startswith("Threads:")).split()[1])
    return Usage(threads, len(os.listdir("/proc/self/fd")), len(asyncio.all_tasks()))


async def settled(baseline: Usage | None, srv: Running) -> Usage:
    """Usage once the server has wound the sessions down (bounded wait)."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        gc.collect()
        now = usage()
        idle = srv.ctx.active_sessions == 0
        if idle and (baseline is None or now.within(baseline)):
            return now
        if time.monotonic() > deadline:
            return now
        await asyncio.sleep(0.1)


async def talk(srv: Running, *, leave_mid_reply: bool = False) -> None:
    """One session: a typed question, its reply (or its first audio), then goodbye."""
    async with websockets.connect(srv.ws, max_size=None) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
        item = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": QUESTION}],
        }
        await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
        await ws.send(json.dumps({"type": "response.create"}))
        until = "response.output_audio.delta" if leave_mid_reply else "response.done"
        async with asyncio.timeout(TURN_TIMEOUT_S):
            while (event := json.loads(await ws.recv()))["type"] != until:
                assert event["type"] != "error", event
        if not leave_mid_reply:
            assert event["response"]["status"] == "completed", event


def tracking(srv: Running) -> list[weakref.ref[Any]]:
    """Remember (weakly) every session the server creates."""
    refs: list[weakref.ref[Any]] = []
    create: Callable[[Profile, bool], Any] = srv.ctx.new_session

    def new_session(profile: Profile, turn_detection: bool = True) -> Any:
        session = create(profile, turn_detection)
        refs.append(weakref.ref(session))
        return session

    srv.ctx.new_session = new_session  # type: ignore[method-assign,unused-ignore]
    return refs


def _holders(obj: Any) -> list[str]:
    """What still refers to `obj`: frames and bound methods by name (for the message)."""
    names = []
    for holder in gc.get_referrers(obj):
        if hasattr(holder, "f_code"):
            names.append(f"frame {holder.f_code.co_qualname}:{holder.f_lineno}")
        elif hasattr(holder, "__func__"):
            names.append(f"method {holder.__func__.__qualname__}")
        else:
            names.append(type(holder).__name__)
    return names


@pytest.mark.timeout(240)
async def test_real_sessions_leave_no_threads_fds_tasks_or_sessions_behind(
    runtime: Runtime,
) -> None:
    async with running_server(runtime=runtime, config=MODEL_TEST_CONFIG) as srv:
        refs = tracking(srv)
        await talk(srv)  # warm-up: worker threads start on first use
        baseline = await settled(None, srv)

        for i in range(SESSIONS):
            await talk(srv, leave_mid_reply=i == SESSIONS - 1)
        after = await settled(baseline, srv)

        print(f"\nbaseline {baseline}, after {SESSIONS} sessions {after}")
        assert srv.ctx.active_sessions == 0
        assert after.threads <= baseline.threads, (baseline, after)
        assert after.fds <= baseline.fds, (baseline, after)
        assert after.tasks <= baseline.tasks, (baseline, after, asyncio.all_tasks())
        assert len(refs) == SESSIONS + 1
        alive = {i: r() for i, r in enumerate(refs) if r() is not None}
        assert alive == {}, {i: _holders(s) for i, s in alive.items()}
        llm = runtime.llm
        if hasattr(llm, "free_instances"):  # the embedded LLM's instances are all handed back
            assert llm.free_instances == llm.options.instances
