"""Checks that a bench run's files are what they claim to be (shared by the model tests)."""

from __future__ import annotations

import json
from pathlib import Path

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def check_files(paths: dict[str, Path], *, turns: int) -> dict[str, object]:
    data = json.loads(paths["json"].read_text("utf-8"))
    assert data["cadence_bench"] == 1
    assert len(data["turns"]) == turns
    assert data["summary"]["overall"]["stages"]["v2v"]["n"] >= 1
    assert {c["name"] for c in data["summary"]["targets"]} >= {"v2v p50 ≤ 400 ms"}
    markdown = paths["markdown"].read_text("utf-8")
    assert markdown.startswith("# cadence bench") and "| v2v |" in markdown
    for key in ("cdf", "waterfall"):
        png = paths[key].read_bytes()
        assert png[:8] == PNG_MAGIC and len(png) > 5_000
        assert paths[key].name in markdown
    return dict(data)
