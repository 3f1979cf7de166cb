"""The vision latency benchmark returns figures for every backend that runs here."""

from __future__ import annotations

import pytest

from cadence.video.bench import format_records, vision_latency

pytest.importorskip("rapidocr_onnxruntime")


def test_vision_latency_reports_each_backend():
    pytest.importorskip("transformers")
    records = vision_latency(families=("mllama",), frame_counts=(1, 2), runs=1)
    backends = [(r["backend"], r.get("frames")) for r in records]
    assert backends == [("scene_reader", 1), ("scene_reader", 2),
                        ("transformers:mllama", 1), ("transformers:mllama", 2)]
    for r in records:
        assert "error" not in r, r
        assert r["vision_ms"] > 0 and r["vision_cached_ms"] < r["vision_ms"]
    assert records[-1]["frame_to_first_token_ms"] > records[-1]["vision_ms"]
    assert records[0]["frame_to_first_token_ms"] is None  # no text LLM handed in
    assert "transformers:mllama" in format_records(records)
