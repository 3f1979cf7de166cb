"""Server counters and the Prometheus text exposition behind `GET /metrics`.

A few labelled counters, gauges and one latency histogram: enough to watch load and turn
latency without a client library.
"""

from __future__ import annotations

from collections import defaultdict

V2V_BUCKETS_MS = (250, 500, 750, 1000, 1500, 2000, 3000, 5000)


def _labels(labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return ""
    inner = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in labels
    )
    return "{" + inner + "}"


class Metrics:
    def __init__(self) -> None:
        self.counters: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
        self.gauges: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
        self._v2v_counts = [0] * (len(V2V_BUCKETS_MS) + 1)
        self._v2v_sum = 0.0
        self.help: dict[str, str] = {
            "cadence_sessions_total": "sessions opened, by transport",
            "cadence_sessions_active": "sessions open now, by transport",
            "cadence_sessions_refused_total": "sessions refused, by reason",
            "cadence_client_events_total": "client events received, by transport",
            "cadence_errors_total": "error events sent, by code",
            "cadence_responses_total": "responses finished, by status",
            "cadence_ready": "1 once the models are loaded and warm",
            "cadence_v2v_ms": "server-side voice-to-voice latency per turn (ms)",
        }

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        series = self.counters[name]
        series[key] = series.get(key, 0.0) + value

    def set(self, name: str, value: float, **labels: str) -> None:
        self.gauges[name][tuple(sorted(labels.items()))] = value

    def add_gauge(self, name: str, delta: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        series = self.gauges[name]
        series[key] = series.get(key, 0.0) + delta

    def observe_v2v(self, ms: float) -> None:
        self._v2v_sum += ms
        for i, bound in enumerate(V2V_BUCKETS_MS):
            if ms <= bound:
                self._v2v_counts[i] += 1
                return
        self._v2v_counts[-1] += 1

    def render(self) -> str:
        lines: list[str] = []
        for kind, table in (("counter", self.counters), ("gauge", self.gauges)):
            for name in sorted(table):
                lines.append(f"# HELP {name} {self.help.get(name, name)}")
                lines.append(f"# TYPE {name} {kind}")
                lines.extend(f"{name}{_labels(k)} {v:g}" for k, v in sorted(table[name].items()))
        lines.append(f"# HELP cadence_v2v_ms {self.help['cadence_v2v_ms']}")
        lines.append("# TYPE cadence_v2v_ms histogram")
        running = 0
        for bound, count in zip((*map(str, V2V_BUCKETS_MS), "+Inf"), self._v2v_counts, strict=True):
            running += count
            lines.append(f'cadence_v2v_ms_bucket{{le="{bound}"}} {running}')
        lines.append(f"cadence_v2v_ms_sum {self._v2v_sum:g}")
        lines.append(f"cadence_v2v_ms_count {running}")
        return "\n".join(lines) + "\n"
