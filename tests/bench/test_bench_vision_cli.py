"""`cadence bench vision` prints frame-to-first-token per vision backend."""

from __future__ import annotations

import pytest

from cadence.cli import main


def test_bench_vision_prints_a_row_per_backend(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "vision", "--frames", "1", "--runs", "1"]) == 0
    table = capsys.readouterr().out
    for backend in ("scene_reader", "transformers:idefics3", "transformers:qwen2_vl"):
        assert backend in table
    row = next(line for line in table.splitlines() if line.startswith("scene_reader"))
    assert float(row.split()[2]) > 0  # vision ms were measured
