"""`cadence bench compare A.json B.json`: what changed between two runs, stage by stage.

Shows p50/p95 of each metric side by side with the change, then quality figures and every
target or budget whose verdict differs.
"""

from __future__ import annotations

from typing import Any

from cadence.bench.report import BenchResult, headline
from cadence.bench.stats import METRICS

QUALITY = ("answered", "correct", "wer_mean", "backchannel_continued", "false_starts", "errors")


def _num(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if abs(float(value)) >= 10 else f"{value:.3g}"


def _change(a: Any, b: Any) -> str:
    if a is None or b is None:
        return ""
    delta = float(b) - float(a)
    pct = f" ({delta / a * 100:+.0f}%)" if a else ""
    return f"{delta:+.0f}{pct}" if abs(delta) >= 10 or not a else f"{delta:+.3g}{pct}"


def comparison(a: BenchResult, b: BenchResult, *, scope: str = "overall") -> list[list[str]]:
    """Rows: metric, A p50, B p50, Δ, A p95, B p95, Δ (ms)."""
    sa, sb = _scope(a, scope), _scope(b, scope)
    rows = []
    for metric in METRICS:
        da, db = sa["stages"].get(metric, {}), sb["stages"].get(metric, {})
        if not da.get("n") and not db.get("n"):
            continue
        row = [metric]
        for stat in ("p50", "p95"):
            va, vb = da.get(stat), db.get(stat)
            row += [_num(va), _num(vb), _change(va, vb)]
        rows.append(row)
    for name in QUALITY:
        va, vb = sa["rates"].get(name), sb["rates"].get(name)
        if va is not None or vb is not None:
            rows.append([name, _num(va), _num(vb), _change(va, vb), "", "", ""])
    return rows


def _scope(result: BenchResult, scope: str) -> dict[str, Any]:
    s = result.summary
    if scope == "overall":
        return dict(s["overall"])
    return dict(s.get("scenarios", {}).get(scope) or {"stages": {}, "rates": {}})


def verdict_changes(a: BenchResult, b: BenchResult) -> list[str]:
    def verdicts(r: BenchResult) -> dict[str, bool | None]:
        checks = [*r.summary.get("targets", []), *r.summary.get("budgets", [])]
        return {c["name"]: c["passed"] for c in checks}

    va, vb = verdicts(a), verdicts(b)
    word = {True: "pass", False: "FAIL", None: "n/a"}
    return [
        f"{name}: {word[va.get(name)]} → {word[vb.get(name)]}"
        for name in dict.fromkeys([*va, *vb])
        if va.get(name) != vb.get(name)
    ]


def render(a: BenchResult, b: BenchResult, name_a: str, name_b: str) -> str:
    headers = ["", "A p50", "B p50", "Δ p50", "A p95", "B p95", "Δ p95"]
    out = [f"A = {name_a}: {headline(a)}", f"B = {name_b}: {headline(b)}"]
    shared = set(a.summary.get("scenarios", {})) & set(b.summary.get("scenarios", {}))
    scopes = ["overall", *sorted(shared)]
    for scope in scopes:
        rows = comparison(a, b, scope=scope)
        if not rows:
            continue
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
        out += ["", f"[{scope}]"]
        for row in [headers, *rows]:
            cells = [
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ]
            out.append("  ".join(cells))
    changes = verdict_changes(a, b)
    out += ["", "verdicts that changed:" if changes else "no target or budget changed its verdict"]
    out += [f"  {c}" for c in changes]
    return "\n".join(out)
