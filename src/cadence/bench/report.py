"""Bench results as files and text: the JSON record, the Markdown report, the terminal table.

The JSON holds every turn and the summary, so `compare` and later analysis need nothing else;
Markdown and the terminal show the same numbers (ms after end of user speech).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cadence.bench.records import TurnRecord
from cadence.bench.stats import METRIC_HELP, METRICS, summarize
from cadence.errors import InputError

FORMAT_VERSION = 1


@dataclass
class BenchResult:
    meta: dict[str, Any]
    turns: list[TurnRecord]
    summary: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.summary:
            self.summary = summarize(self.turns, int(self.meta.get("sessions", 1)))

    def to_json(self) -> dict[str, Any]:
        return {
            "cadence_bench": FORMAT_VERSION,
            "meta": self.meta,
            "summary": self.summary,
            "turns": [t.to_json() for t in self.turns],
        }


def load_result(path: Path) -> BenchResult:
    try:
        data = json.loads(Path(path).read_text("utf-8"))
    except FileNotFoundError:
        raise InputError(f"result file {path} does not exist") from None
    except ValueError as exc:
        raise InputError(f"{path} is not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("cadence_bench") != FORMAT_VERSION:
        raise InputError(f"{path} is not a cadence bench result (version {FORMAT_VERSION})")
    turns = [TurnRecord.from_json(t) for t in data.get("turns", [])]
    return BenchResult(data.get("meta", {}), turns, data.get("summary", {}))


def write_json(result: BenchResult, path: Path) -> None:
    path.write_text(json.dumps(result.to_json(), indent=1) + "\n", "utf-8")


def _ms(value: object) -> str:
    return "-" if value is None else f"{float(value):.0f}"  # type: ignore[arg-type]


def _pct(value: object) -> str:
    return "-" if value is None else f"{100 * float(value):.0f}%"  # type: ignore[arg-type]


def _verdict(passed: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "n/a"}[passed]


def _budgets(result: BenchResult) -> dict[str, float]:
    """metric → its budget (ms), for the table's last column."""
    return {c["metric"]: c["limit_ms"] for c in result.summary.get("budgets", [])}


def stage_rows(result: BenchResult, stages: dict[str, Any]) -> list[list[str]]:
    budgets = _budgets(result)
    rows = []
    for metric in METRICS:
        d = stages.get(metric) or {}
        if not d.get("n"):
            continue
        limit = budgets.get(metric)
        rows.append([metric, str(d["n"]), _ms(d["p50"]), _ms(d["p95"]), _ms(d["max"]), _ms(limit)])
    return rows


def _grid(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(
        h.ljust(w) if i == 0 else h.rjust(w)
        for i, (h, w) in enumerate(zip(headers, widths, strict=True))
    )
    out = [line, "  ".join("-" * w for w in widths)]
    for r in rows:
        out.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    return "\n".join(out)


def headline(result: BenchResult) -> str:
    m = result.meta
    return (
        f"cadence bench · target {m.get('target')} · {', '.join(m.get('scenarios', []))} · "
        f"{m.get('sessions')} session(s) × {m.get('trials')} trial(s) · {len(result.turns)} turns"
    )


def terminal_table(result: BenchResult) -> str:
    """The table printed at the end of a run: p50/p95/max per stage, quality, pass/fail."""
    s = result.summary
    headers = ["ms after end of speech", "n", "p50", "p95", "max", "budget"]
    parts = [headline(result)]
    rows = stage_rows(result, s["overall"]["stages"])
    parts.append(_grid(headers, rows) if rows else "(no latencies measured)")
    r = s["overall"]["rates"]
    parts.append(
        f"answered {_pct(r['answered'])} · correct answer {_pct(r['correct'])} · "
        f"WER {r['wer_mean'] if r['wer_mean'] is not None else '-'} · "
        f"backchannel kept talking {_pct(r['backchannel_continued'])} · "
        f"false starts {r['false_starts']} · talked over {r.get('talked_over', 0)} · "
        f"errors {r['errors']} · "
        f"mic lateness max {_ms(r['mic_late_ms_max'])} ms"
    )
    checks = [*s.get("targets", []), *(c for c in s.get("budgets", []) if c["passed"] is False)]
    if checks:
        parts.append("targets and budgets missed:" if not s.get("targets") else "targets:")
        for c in s.get("targets", []):
            note = f"  ({c['note']})" if c.get("note") else ""
            parts.append(f"  {_verdict(c['passed']):4}  {c['name']}: {_ms(c['value'])}{note}")
        missed = [c["name"] for c in s.get("budgets", []) if c["passed"] is False]
        if missed:
            parts.append("  over budget at p95: " + ", ".join(missed))
    skipped = result.meta.get("skipped") or {}
    for name, reason in skipped.items():
        parts.append(f"skipped {name}: {reason}")
    return "\n".join(parts)


def _md_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def markdown(result: BenchResult, images: dict[str, str]) -> str:
    m, s = result.meta, result.summary
    out = [f"# {headline(result)}", ""]
    out.append(
        f"Started {m.get('started')}, {m.get('duration_s')} s; host {m.get('host', {})}. "
        "Latencies in ms after the end of user speech, measured at the client."
    )
    headers = ["metric", "n", "p50", "p95", "max", "budget"]
    out += ["", "## All turns", "", _md_table(headers, stage_rows(result, s["overall"]["stages"]))]
    out += [
        "",
        "## Targets",
        "",
        _md_table(
            ["target", "value", "result", "note"],
            [
                [c["name"], _ms(c["value"]), _verdict(c["passed"]), c.get("note", "")]
                for c in s["targets"]
            ],
        ),
    ]
    out += [
        "",
        "## Budgets (p95 against INTERFACES defaults)",
        "",
        _md_table(
            ["stage", "p95", "budget", "result"],
            [
                [c["name"], _ms(c["value"]), _ms(c["limit_ms"]), _verdict(c["passed"])]
                for c in s["budgets"]
            ],
        ),
    ]
    for name, sub in s.get("scenarios", {}).items():
        r = sub["rates"]
        out += ["", f"## {name}", "", _md_table(headers, stage_rows(result, sub["stages"])), ""]
        out.append(
            f"answered {_pct(r['answered'])}, correct {_pct(r['correct'])}, WER {r['wer_mean']}, "
            f"backchannel continued {_pct(r['backchannel_continued'])}, "
            f"false starts {r['false_starts']}, errors {r['errors']}"
        )
    if m.get("skipped"):
        out += ["", "## Skipped", ""] + [f"- **{k}**: {v}" for k, v in m["skipped"].items()]
    out += ["", "## Metrics", ""] + [f"- `{k}`: {v}" for k, v in METRIC_HELP.items()]
    for title, file in images.items():
        out += ["", f"![{title}]({file})"]
    out += ["", "## Turns", ""]
    out.append(
        _md_table(
            ["scenario", "s/t/cue", "kind", "voice", "said", "heard", "reply", "v2v", "stop"],
            [
                [
                    t.scenario,
                    f"{t.session}/{t.trial}/{t.cue}",
                    t.kind,
                    f"{t.voice} ×{t.speed}",
                    t.said,
                    t.heard or "",
                    (t.reply or "").replace("|", "/")[:80],
                    _ms(t.v2v_ms),
                    _ms(t.barge_in_stop_ms),
                ]
                for t in result.turns
            ],
        )
    )
    return "\n".join(out) + "\n"
