"""Embed cadence in your own program: load the models once, open a session, feed it audio
from any source, and read what the agent says as an async iterator of typed events.

Run:  python demos/embed_example.py [demos/capital_of_france.wav] [--config cadence.toml]
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import numpy as np

from cadence.agent import outputs as out
from cadence.agent.runtime import Runtime
from cadence.agent.session import Session
from cadence.audio.chunk import AudioChunk
from cadence.audio.io import read_audio
from cadence.config import load_config

FRAME_S = 0.02  # 20 ms at a time, at real-time pace, like a microphone


async def microphone(session: Session, audio: AudioChunk) -> None:
    """Your audio source (any rate or channel count), then silence so the turn can end."""
    silence = np.zeros((round(2.0 * audio.sample_rate), audio.channels), np.float32)
    samples = np.concatenate([audio.float32().samples, silence])
    step = round(FRAME_S * audio.sample_rate)
    for start in range(0, len(samples), step):
        session.push_audio(AudioChunk(samples[start : start + step], audio.sample_rate))
        await asyncio.sleep(FRAME_S)


async def main(wav: Path, config: Path | None = None) -> str:
    profile = load_config(config).profile()  # the same config objects `cadence serve` uses
    runtime = await Runtime.load(profile)  # once per process; sessions share it
    reply: list[str] = []
    async with Session(runtime, profile) as session:
        mic = asyncio.create_task(microphone(session, read_audio(wav)))
        async for event in session.events():
            match event:
                case out.UserTurnCommitted(text=text):
                    print(f"you said: {text}")
                case out.ResponseText(text=text):
                    reply.append(text)
                case out.ResponseDone(status="completed", latency=latency):
                    print(f"agent: {' '.join(reply)}")
                    print(f"(first reply audio {latency.get('v2v')} ms after you stopped)")
                    break
        mic.cancel()
    return " ".join(reply)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Ask the agent the question in a WAV file.")
    here = Path(__file__).parent
    parser.add_argument("wav", type=Path, nargs="?", default=here / "capital_of_france.wav")
    parser.add_argument("--config", type=Path, help="TOML config with agent profiles")
    args = parser.parse_args()
    asyncio.run(main(args.wav, args.config))
