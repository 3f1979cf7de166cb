"""A real headless Chromium calls the demo page's agent over WebRTC, with a fake mic and camera.

The browser's fake devices play a synthesized question (WAV) and a generated y4m video; the
test reads the agent's transcript from the page and inbound audio from WebRTC stats, and
saves a screenshot of the call in test-artifacts/.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
import soundfile as sf
from transport_harness import MODEL_TEST_CONFIG, Running, running_server

from cadence.agent.runtime import Runtime
from cadence.audio.chunk import AudioChunk
from cadence.bench.voices import synthesize

CHROMIUM = Path("/usr/lib/chromium/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
TURN_TIMEOUT_MS = 90_000

pytestmark = [
    pytest.mark.models,
    pytest.mark.browser,
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed"),
]


def write_question_wav(path: Path) -> None:
    question = synthesize("What is the capital of France?", "piper")
    # The fake device starts at getUserMedia, before the call connects: lead with silence.
    lead, tail = AudioChunk.silence(1.5, 16_000), AudioChunk.silence(3.0, 16_000)
    sf.write(path, AudioChunk.concat([lead, question, tail]).mono_f32(), 16_000, subtype="PCM_16")


def write_y4m(path: Path, frames: int = 30, width: int = 160, height: int = 120) -> None:
    """A 4:2:0 y4m clip: a bright square moving over a dark background."""
    with path.open("wb") as f:
        f.write(f"YUV4MPEG2 W{width} H{height} F15:1 Ip A1:1 C420jpeg\n".encode())
        for i in range(frames):
            y = np.full((height, width), 40, np.uint8)
            x0 = (i * 4) % (width - 32)
            y[40:72, x0 : x0 + 32] = 220
            f.write(b"FRAME\n" + y.tobytes() + bytes([128]) * (width * height // 2))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def server(runtime: Runtime) -> AsyncIterator[Running]:
    async with running_server(runtime=runtime, config=MODEL_TEST_CONFIG) as srv:
        yield srv


async def test_chromium_calls_the_agent(server: Running, tmp_path: Path) -> None:
    from playwright.async_api import TimeoutError as PlaywrightTimeout
    from playwright.async_api import async_playwright

    wav, y4m = tmp_path / "question.wav", tmp_path / "camera.y4m"
    write_question_wav(wav)
    write_y4m(y4m)
    args = [
        "--headless=new",
        "--no-sandbox",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}%noloop",
        f"--use-file-for-fake-video-capture={y4m}",
        "--autoplay-policy=no-user-gesture-required",
        "--allow-loopback-in-peer-connection",
        "--disable-features=WebRtcHideLocalIpsWithMdns",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    ]
    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=args)
        try:
            page = await browser.new_page()
            await page.goto(f"{server.http}/")
            await page.uncheck("#ec")  # Chrome's processing mangles the fake file (TESTING.md)
            await page.select_option("#video", "camera")
            await page.click("#start")
            agent = page.locator("#transcript li.agent")
            try:
                await agent.filter(has_text=re.compile("paris", re.I)).first.wait_for(
                    timeout=TURN_TIMEOUT_MS
                )
            except PlaywrightTimeout:
                said = await page.locator("#transcript li").all_inner_texts()
                status = await page.locator("#status").all_inner_texts()
                why = f"no answer with 'Paris': transcript {said}, status {status}"
                raise AssertionError(why) from None
            user = await page.locator("#transcript li.user").first.inner_text()
            assert "capital" in user.lower()
            stats = None
            for _ in range(50):  # audio keeps arriving while the agent speaks
                stats = await page.evaluate("window.cadence.inboundAudio()")
                if stats and stats["energy"] > 0:
                    break
                await asyncio.sleep(0.1)
            assert stats and stats["bytes"] > 0 and stats["packets"] > 0
            assert stats["energy"] > 0  # not only silence: the agent's voice arrived
            # Polled through page.evaluate (DevTools, outside the page's CSP): wait_for_function
            # compiles its predicate with eval, which the demo's `default-src 'self'` forbids.
            latencies: list[dict[str, Any]] = []
            for _ in range(100):
                latencies = await page.evaluate("window.cadence.latencies")
                if any(t["browser"] is not None for t in latencies):
                    break
                await asyncio.sleep(0.1)
            await page.screenshot(path=str(ARTIFACTS / "browser-call.png"), full_page=True)
            measured = [t["browser"] for t in latencies if t["browser"] is not None]
            assert measured and 0 < measured[0] < 10_000, latencies  # end of speech → audio
            assert any(t["server"] for t in latencies)
            await page.click("#stop")
        finally:
            await browser.close()
    for _ in range(100):  # the call ends on the server too
        if not server.ctx.calls:
            break
        await asyncio.sleep(0.05)
    assert not server.ctx.calls and server.ctx.active_sessions == 0
