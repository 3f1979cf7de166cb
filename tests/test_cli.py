"""`cadence` as a user runs it: one clear line on bad input, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cadence.bench.voices import synthesize


def cadence(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cadence.cli", *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a readable audio file"),
        (b"RIFF\x10\x00\x00\x00WAVEfmt garbage", "not a readable"),
    ],
)
def test_corrupt_or_empty_file_gets_one_clear_line(tmp_path: Path, content: bytes, message: str):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(content)
    proc = cadence("talk", str(bad))
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_over_long_file_is_refused_with_the_limit(tmp_path: Path):
    long = tmp_path / "long.flac"
    sf.write(str(long), np.zeros((8000 * 12, 1), np.float32), 8000)
    proc = cadence("talk", str(long), "--max-seconds", "10")
    assert proc.returncode == 2
    assert "over the 10 s limit" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_file_and_bad_config(tmp_path: Path):
    assert "no such file" in cadence("talk", str(tmp_path / "nope.wav")).stderr
    cfg = tmp_path / "c.toml"
    cfg.write_text("[profiles.x]\nmode = 'telepathy'\n")
    wav = tmp_path / "q.wav"
    sf.write(str(wav), np.zeros((1600, 1), np.float32), 16000)
    proc = cadence("talk", str(wav), "--config", str(cfg))
    assert proc.returncode == 2 and "telepathy" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.models
def test_talk_json_on_a_stereo_44k_file(tmp_path: Path):
    q = synthesize("What is the capital of France?").resample(44100)
    wav = tmp_path / "q.wav"
    sf.write(str(wav), np.repeat(q.samples, 2, axis=1), 44100)
    out = tmp_path / "reply.wav"
    proc = cadence("talk", str(wav), "-o", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    turns = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(turns) == 1 and "paris" in turns[0]["reply"].lower()
    assert set(turns[0]["latency"]) >= {"endpoint", "asr_final", "llm_first_token", "v2v"}
    info = sf.info(str(out))
    assert info.samplerate == 24000 and info.channels == 1 and info.frames > 0
