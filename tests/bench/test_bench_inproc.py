"""A small `cadence bench run --target inproc --scenario single` with the real models.

The numbers are printed, never asserted (STYLE: benchmarks print); what is checked is that
the turn was answered and that the JSON, Markdown and PNG files are well formed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from bench_files import check_files

from cadence.agent.runtime import Runtime
from cadence.bench.progress import Progress
from cadence.bench.report import terminal_table
from cadence.bench.runner import BenchOptions, run_bench, write_outputs

pytestmark = pytest.mark.models


async def test_inproc_single_writes_reports(runtime: Runtime, tmp_path: Path) -> None:
    options = BenchOptions(target="inproc", scenarios="single", trials=2, warmup=0, seed=3)
    result = await run_bench(options, runtime=runtime, progress=Progress(2))
    paths = write_outputs(result, tmp_path, "inproc")
    print("\n" + terminal_table(result))
    assert len(result.turns) == 2
    assert all(t.answered and t.v2v_ms is not None for t in result.turns), result.turns
    assert all(t.heard for t in result.turns)
    assert all(t.server.get("v2v") is not None for t in result.turns)  # the latency record
    assert len({(t.voice, t.speed, t.said) for t in result.turns}) == 2  # never one sample
    check_files(paths, turns=2)
