"""`cadence bench run`: build the scripts, run the sessions against the target, write the files.

Scenarios run one after another; within one, N sessions run at once, each starting at a
random offset and, when N > 1, asking a question every 6-10 s so turns overlap as they would.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import platform
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cadence.bench import links as ln
from cadence.bench.progress import Progress
from cadence.bench.records import TurnRecord
from cadence.bench.report import BenchResult, markdown, write_json
from cadence.bench.scenarios import Cue, Script, Utterance, build_script, paced, render, resolve
from cadence.bench.user import SimulatedUser
from cadence.errors import CadenceError, ConfigError

LinkFactory = Callable[[bool], ln.Link]  # argument: the trial shows video
STAGGER_S = 6.0  # concurrent sessions start spread over this long
PERIOD_S = (6.0, 10.0)


@dataclass(frozen=True)
class BenchOptions:
    target: str = "inproc"
    scenarios: str = "single"
    sessions: int = 1
    trials: int = 5
    warmup: int = 1
    token: str | None = None
    seed: int = 0
    config: Path | None = None
    profile: str | None = None


@dataclass
class _Plan:
    scripts: dict[str, list[list[Script]]]  # scenario → session → trials
    utterances: dict[Cue, Utterance] = field(default_factory=dict)

    def audio(self, script: Script) -> list[Utterance]:
        return [self.utterances[c] for c in script.cues]


def _check(options: BenchOptions) -> None:
    if options.sessions < 1 or options.trials < 1 or options.warmup < 0:
        raise ConfigError("--sessions and --trials must be at least 1, --warmup at least 0")


async def _link_factory(
    target: ln.Target, options: BenchOptions, runtime: Any, say: Callable[[str], None]
) -> LinkFactory:
    if target.kind == "ws":
        from cadence.bench.wslink import WsLink

        return lambda video: WsLink(target.url, target.token)
    if target.kind == "webrtc":
        from cadence.bench.rtclink import RtcLink

        return lambda video: RtcLink(target.url, target.token, video=video)
    from cadence.agent.runtime import Runtime
    from cadence.bench.inproc import InprocLink
    from cadence.config import load_config

    profile = load_config(options.config).profile(options.profile)
    loaded = runtime if runtime is not None else await Runtime.load(profile, progress=say)
    return lambda video: InprocLink(loaded, profile)


def _plan(scenarios: list[str], options: BenchOptions) -> _Plan:
    scripts: dict[str, list[list[Script]]] = {}
    for name in scenarios:
        per_session = []
        for s in range(options.sessions):
            rng = random.Random(f"{options.seed}/pace/{name}/{s}")
            trials = [
                build_script(name, trial=k, session=s, seed=options.seed)
                for k in range(options.trials)
            ]
            if options.sessions > 1:
                trials = [paced(t, rng) for t in trials]
            per_session.append(trials)
        scripts[name] = per_session
    return _Plan(scripts)


async def _render(plan: _Plan, extra: list[Script]) -> None:
    """Synthesize every cue before any timing starts (synthesis would steal the CPU)."""
    every = [s for sessions in plan.scripts.values() for trials in sessions for s in trials]
    for script in [*every, *extra]:
        for cue in script.cues:
            if cue not in plan.utterances:
                plan.utterances[cue] = await asyncio.to_thread(render, cue)


async def _session(
    make_link: LinkFactory,
    plan: _Plan,
    trials: list[Script],
    rng: random.Random,
    concurrent: bool,
    progress: Progress,
) -> list[TurnRecord]:
    records: list[TurnRecord] = []
    next_at: float | None = time.perf_counter() + rng.uniform(0, STAGGER_S) if concurrent else None
    for script in trials:
        async with make_link(script.sign is not None) as link:
            user = SimulatedUser(link, script, plan.audio(script), first_speech_at=next_at)
            turns = await user.run()
        records += turns
        v2v = [t.v2v_ms for t in turns if t.v2v_ms is not None]
        note = f"{script.scenario} s{script.session} t{script.trial}" + (
            f" v2v {v2v[-1]:.0f} ms" if v2v else ""
        )
        progress.advance(len(script.cues), note)
        if concurrent:
            asked = max((r.speech_start for r in user.runs if r.speech_start), default=None)
            next_at = (asked or time.perf_counter()) + rng.uniform(*PERIOD_S)
    return records


async def _scenario(
    name: str, plan: _Plan, options: BenchOptions, make_link: LinkFactory, bar: Progress
) -> list[TurnRecord]:
    """All sessions of one scenario, at once."""
    async with asyncio.TaskGroup() as group:
        tasks = [
            group.create_task(
                _session(
                    make_link,
                    plan,
                    trials,
                    random.Random(f"{options.seed}/start/{name}/{s}"),
                    options.sessions > 1,
                    bar,
                )
            )
            for s, trials in enumerate(plan.scripts[name])
        ]
    return [t for task in tasks for t in task.result()]


async def run_bench(
    options: BenchOptions, *, runtime: Any = None, progress: Progress | None = None
) -> BenchResult:
    """Run the benchmark; `runtime` reuses loaded models for the in-process target."""
    _check(options)
    scenarios, skipped = resolve(options.scenarios)
    if not scenarios:
        raise ConfigError("none of the requested scenarios can run: " + "; ".join(skipped.values()))
    target = ln.parse_target(options.target, options.token)
    plan = _plan(scenarios, options)
    warm = [build_script("single", trial=-1 - i, seed=options.seed) for i in range(options.warmup)]
    total = sum(len(s.cues) for sess in plan.scripts.values() for tr in sess for s in tr)
    bar = progress or Progress(total)
    started, t0, load0 = dt.datetime.now().astimezone(), time.perf_counter(), os.getloadavg()
    make_link = await _link_factory(target, options, runtime, bar.say)
    async with make_link(False):  # fail now, not after synthesis, if the target is not there
        pass
    bar.say("synthesizing the simulated user's speech")
    await _render(plan, warm)
    for script in warm:
        bar.say("warm-up turn (not counted)")
        async with make_link(False) as link:
            await SimulatedUser(link, script, plan.audio(script)).run()
    turns: list[TurnRecord] = []
    for name in scenarios:
        try:
            turns += await _scenario(name, plan, options, make_link, bar)
        except* CadenceError as group:  # one clear error line, not an exception group
            raise group.exceptions[0] from None
    bar.close()
    meta = {
        "target": target.label,
        "scenarios": scenarios,
        "skipped": skipped,
        "sessions": options.sessions,
        "trials": options.trials,
        "warmup": options.warmup,
        "seed": options.seed,
        "started": started.isoformat(timespec="seconds"),
        "duration_s": round(time.perf_counter() - t0, 1),
        "host": {
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_start": [round(x, 2) for x in load0],
            "load_avg_end": [round(x, 2) for x in os.getloadavg()],
        },
    }
    return BenchResult(meta, turns)


def write_outputs(result: BenchResult, out_dir: Path, name: str | None = None) -> dict[str, Path]:
    """JSON, Markdown and two PNGs under `out_dir`, sharing one file stem."""
    from cadence.bench import plots

    out_dir.mkdir(parents=True, exist_ok=True)
    if name is None:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        slug = re.sub(r"[^A-Za-z0-9]+", "-", str(result.meta.get("target", "run"))).strip("-")
        name = f"bench-{stamp}-{slug[:40]}"
    paths = {
        "json": out_dir / f"{name}.json",
        "markdown": out_dir / f"{name}.md",
        "cdf": out_dir / f"{name}-cdf.png",
        "waterfall": out_dir / f"{name}-waterfall.png",
    }
    write_json(result, paths["json"])
    plots.latency_cdf(result.turns, paths["cdf"])
    plots.waterfall(result.turns, paths["waterfall"])
    images = {"latency CDF": paths["cdf"].name, "stage waterfall": paths["waterfall"].name}
    paths["markdown"].write_text(markdown(result, images), "utf-8")
    return paths
