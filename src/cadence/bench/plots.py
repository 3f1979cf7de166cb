"""PNG plots of a bench result: latency CDFs against the targets, and a per-turn waterfall.

matplotlib's object API renders with Agg and keeps no global figure state (no pyplot), so
plotting works without a display and inside a long-running process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from cadence.bench.records import TurnRecord

MAX_WATERFALL_TURNS = 60
STAGE_COLORS = {
    "endpoint": "#4c72b0",
    "asr_final": "#55a868",
    "vlm_first_token": "#dd8452",
    "llm_first_token": "#c44e52",
    "first_clause": "#8172b2",
    "tts_first_audio": "#ccb974",
    "server_v2v": "#64b5cd",
    "v2v": "#222222",  # the client's, last: transport on top of the server's
}


def _cdf(ax: Any, values: list[float], label: str) -> None:
    """An empirical CDF that starts at 0 just before the smallest value."""
    xs = [values[0], *values]
    ys = [0.0, *(np.arange(1, len(values) + 1) / len(values))]
    ax.step(xs, ys, where="post", label=label)


def latency_cdf(turns: list[TurnRecord], path: Path) -> None:
    """CDF of client v2v per scenario, and of barge-in stop, with the target lines."""
    fig = Figure(figsize=(11, 4))
    v2v_ax, stop_ax = fig.subplots(1, 2)
    for scenario in sorted({t.scenario for t in turns}):
        values = sorted(t.v2v_ms for t in turns if t.scenario == scenario and t.v2v_ms is not None)
        if values:
            _cdf(v2v_ax, values, f"{scenario} (n={len(values)})")
    for x, label in ((400, "p50 target"), (600, "p95 target"), (1000, "concurrent p95")):
        v2v_ax.axvline(x, linestyle="--", linewidth=0.8, color="grey")
        v2v_ax.text(x, 0.02, f" {label}", rotation=90, fontsize=7, color="grey", va="bottom")
    v2v_ax.set(
        title="voice-to-voice at the client",
        xlabel="ms after end of speech",
        ylabel="fraction of turns",
        ylim=(0, 1.02),
    )
    stops = sorted(t.barge_in_stop_ms for t in turns if t.barge_in_stop_ms is not None)
    if stops:
        _cdf(stop_ax, stops, f"barge-in (n={len(stops)})")
    else:
        stop_ax.set_xlim(0, 200)
        stop_ax.text(100, 0.5, "no barge-in turns in this run", ha="center", color="grey")
    stop_ax.axvline(100, linestyle="--", linewidth=0.8, color="grey")
    stop_ax.set(title="barge-in stop", xlabel="ms after user speech start", ylim=(0, 1.02))
    for ax in (v2v_ax, stop_ax):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def waterfall(turns: list[TurnRecord], path: Path) -> None:
    """One row per answered turn: when each stage finished, after the end of speech."""
    rows = [t for t in turns if t.v2v_ms is not None or t.server][:MAX_WATERFALL_TURNS]
    fig = Figure(figsize=(11, 1.6 + 0.28 * max(1, len(rows))))
    ax = fig.subplots()
    for y, turn in enumerate(rows):
        marks = [(s, turn.stage(s)) for s in STAGE_COLORS]
        previous = 0.0
        # Stages can finish out of order (a speculative transcript before the endpoint):
        # each bar runs from the latest earlier stage to this one.
        for value, stage in sorted((v, s) for s, v in marks if v is not None):
            width = max(value - previous, 1.0)
            ax.barh(y, width, left=previous, height=0.7, color=STAGE_COLORS[stage])
            previous = max(previous, value)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{t.scenario} s{t.session} t{t.trial} c{t.cue}" for t in rows], fontsize=7)
    ax.invert_yaxis()
    ax.axvline(600, linestyle="--", linewidth=0.8, color="grey")
    ax.set_title("per-turn stage waterfall (each bar ends when its stage finished)", pad=24)
    ax.set_xlabel("ms after end of user speech")
    handles = [Patch(color=c, label=s) for s, c in STAGE_COLORS.items()]
    ax.legend(
        handles=handles, fontsize=7, ncol=7, frameon=False, loc="lower left", bbox_to_anchor=(0, 1)
    )
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
