"""The demos run as documented: the embeddable-API example answers a spoken question."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from cadence.bench.voices import synthesize

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.models
def test_embed_example_answers_a_synthesized_question(tmp_path: Path) -> None:
    wav = tmp_path / "question.wav"
    sf.write(wav, synthesize("What is the capital of France?", "piper").mono_f32(), 16_000)
    result = subprocess.run(
        [sys.executable, str(ROOT / "demos" / "embed_example.py"), str(wav)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.lower().splitlines()
    assert any(line.startswith("you said:") and "capital of france" in line for line in lines)
    assert any(line.startswith("agent:") and "paris" in line for line in lines), result.stdout
