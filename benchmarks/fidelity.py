#!/usr/bin/env python3
"""Sim-to-real fidelity: one trace, live on real vLLM and in the simulator, side by side.

    python benchmarks/fidelity.py            # about 8 minutes on two cores

What it does, all on one machine and in one run so that both sides see the same
load from elsewhere:

1. builds the tiny model and starts one real vLLM (CPU build, 16 MiB = 16,384
   tokens of KV, the settings of ``tests/runtime/vllm_fixture.py``);
2. calibrates it (``thunder calibrate``'s probes and fit) before every round
   of live runs and after the last: the machine's load drifts, so the
   simulator runs with every profile and reports the median;
3. writes a token-scaled subset of the SWE-bench trace (first ``--programs``
   programs, first ``--steps`` steps each, every token count times
   ``--token-scale`` so one context fits ``max_model_len`` 4096 while the live
   contexts together exceed the KV cache), so the simulator sees exactly the
   token counts the replay sends;
4. for each policy and parallel level, ``--repeats`` times, interleaved: starts
   ``thunder serve`` in front of the vLLM, replays the trace through it
   (``thunder run``'s replayer; tool times times ``--time-scale`` so the
   engine, not the tool sleeps, is the bottleneck), stops the proxy (its
   decision log gives the pauses) and reads vLLM's own request-time
   histograms (how long requests spent in the engine, and outside it);
5. simulates every cell with the calibrated profiles and the same tool-time
   scale (also without the front end: the engine model alone), and
   writes ``benchmarks/results/fidelity.json`` and the table in
   ``docs/fidelity.md`` (between its table markers).

Every live replay has a timeout and the whole run a deadline (``--budget-s``):
a cell that cannot finish in time is reported as such, nothing hangs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from thunder.core.probes import default_probes  # noqa: E402
from thunder.results.tables import build_tables, summarize  # noqa: E402
from thunder.runtime.engines.launcher import (REPO_ROOT, VllmServer, VllmServerConfig, default_vllm_venv,  # noqa: E402
                                         free_port, http_ok)
from thunder.runtime.engines.measure import CalibrateConfig, measure_together  # noqa: E402
from thunder.runtime.replay import ReplayConfig, replay  # noqa: E402
from thunder.sim.experiment import CellSpec, run_cell  # noqa: E402
from thunder.sim.fit_profile import build_profile  # noqa: E402
from thunder.traces import TraceProgram, load_trace, write_trace  # noqa: E402
from thunder.traces.scale import scale_trace  # noqa: E402

METRICS = ("steps_per_min", "steady_steps_per_min", "kv_hit_rate", "mean_step_latency_s", "p95_step_latency_s",
           "pauses")
COMPARED = METRICS + ("engine_preemptions", "engine_s_per_request", "outside_vllm_s_per_request")
TABLE_START, TABLE_END = "<!-- fidelity-table:start -->", "<!-- fidelity-table:end -->"
MAX_NUM_BATCHED_TOKENS, MAX_NUM_SEQS = 2048, 128  # vLLM 0.32's OpenAI-server defaults on CPU
Cell = tuple[int, str, int]  # (backends, policy, parallel programs)


def add_trace_arguments(parser: argparse.ArgumentParser, time_scale_help: str | None = None) -> None:
    """The scaled SWE-bench subset the live benchmarks share: one context fits
    ``max_model_len`` 4096, the contexts together outgrow a 16,384-token cache."""
    parser.add_argument("--trace", type=Path, default=ROOT / "traces" / "swebench.jsonl")
    parser.add_argument("--programs", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--token-scale", type=float, default=0.25)
    parser.add_argument("--time-scale", type=float, default=0.1, help=time_scale_help)


def write_scaled_trace(args: argparse.Namespace, path: Path) -> list[TraceProgram]:
    """Scale the trace as ``add_trace_arguments`` says, write it to ``path`` and return
    what a reader of that file gets (the simulator reads it; the replay sends it)."""
    loaded = load_trace(args.trace)
    write_trace(path, loaded.header, scale_trace(list(loaded.programs)[:args.programs], args.token_scale,
                                                 max_steps=args.steps))
    return list(load_trace(path).programs)


def build_model(directory: Path) -> Path:
    venv = default_vllm_venv()
    subprocess.run([str(venv / "bin" / "python"), str(REPO_ROOT / "scripts" / "build_tiny_model.py"), str(directory)],
                   check=True, capture_output=True, timeout=300)
    return directory


def metrics_value(url: str, name: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


def engine_seconds(urls: list[str]) -> tuple[float, float, float]:
    """(engine seconds, server seconds, requests) from vLLM's histograms, summed over the
    servers: time in the engine (queue + inference), and from the API server stamping
    arrival to the last token (e2e)."""
    return (sum(metrics_value(url, "vllm:request_queue_time_seconds_sum")
                + metrics_value(url, "vllm:request_inference_time_seconds_sum") for url in urls),
            sum(metrics_value(url, "vllm:e2e_request_latency_seconds_sum") for url in urls),
            sum(metrics_value(url, "vllm:request_inference_time_seconds_count") for url in urls))


class Proxy:
    """``thunder serve`` as a child process; stopping it exports its tables."""

    def __init__(self, backend: str, policy: str, export_dir: Path) -> None:
        self.port = free_port()
        self.export_dir = export_dir
        thunder = Path(sys.executable).parent / "thunder"
        with open(export_dir.parent / f"{export_dir.name}.log", "wb") as log:
            self.proc = subprocess.Popen(
                [str(thunder), "serve", "--backends", backend, "--policy", policy, "--port", str(self.port),
                 "--export", str(export_dir), "--log-level", "WARNING"],
                stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 60
        while not http_ok(f"{self.url}/health"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"thunder serve did not become healthy (see {export_dir}.log)")
            time.sleep(0.2)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu_s(self) -> float | None:
        """CPU seconds the proxy process has used so far (user + system; Linux), else None."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime

    def stop(self) -> dict[str, int]:
        """SIGTERM (the proxy exports on the way out); the decision counts."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        counts: dict[str, int] = {}
        path = self.export_dir / "decisions.csv"
        if path.exists():
            with open(path) as f:
                for row in csv.DictReader(f):
                    counts[row["action"]] = counts.get(row["action"], 0) + 1
        return counts


def steady_steps_per_min(steps: Any, parallel: int) -> float | None:
    """Steps per minute while ``parallel`` programs are running, i.e. until the run starts to
    drain: from the start to the completion that leaves fewer unfinished programs than
    ``parallel``. Whole-run steps/min also counts the drain, where the last one or two
    programs run alone through their remaining steps and tool calls; how long that takes
    hangs on which program a policy happened to delay, and moves by 20% or more when the
    engine's speed changes by a few percent (docs/fidelity.md, section 3)."""
    if steps is None or len(steps) == 0:
        return None
    finished = sorted(steps.groupby("program_id")["done_s"].max())
    window = finished[max(0, len(finished) - parallel)]  # the (P - n + 1)-th completion
    return float((steps["done_s"] <= window).sum() / window * 60.0) if window > 0 else None


def preemptions(backends: list[str]) -> float:
    return sum(metrics_value(url, "vllm:num_preemptions_total") for url in backends)


def live_cell(backends: list[str], trace: list[TraceProgram], policy: str, parallel: int, time_scale: float,
              seed: int, work: Path, timeout_s: float) -> dict[str, Any]:
    """One replay through a fresh proxy in front of ``backends``. ``seed`` picks the prompt
    token ids: a new seed per run keeps one run's prompts from hitting another's leftovers
    in vLLM's prefix cache."""
    export = work / f"export-{len(backends)}-{policy}-{parallel}-{seed}"
    proxy = Proxy(",".join(backends), policy, export)
    preempted = preemptions(backends)
    engine_before = engine_seconds(backends)
    try:
        config = ReplayConfig(endpoint=proxy.url, parallel=parallel, time_scale=time_scale, token_scale=1.0,
                              seed=seed)
        result = asyncio.run(asyncio.wait_for(replay(trace, config), timeout=timeout_s))
    finally:
        decisions = proxy.stop()
    time.sleep(1.0)  # vLLM's counters update in batches
    engine_after = engine_seconds(backends)
    tables = build_tables(result.steps, result.programs, [], [])
    summary = summarize(tables, None, result.duration_s, policy=policy, parallel=parallel)
    summary["steady_steps_per_min"] = steady_steps_per_min(tables.steps, parallel)
    served = engine_after[2] - engine_before[2]
    summary["engine_s_per_request"] = (engine_after[0] - engine_before[0]) / served if served else None
    # Where a live request's time goes: the client's latency minus vLLM's e2e is HTTP,
    # the proxy and the API server before arrival / after the last token.
    server_s = (engine_after[1] - engine_before[1]) / served if served else None
    summary["vllm_e2e_s_per_request"] = server_s
    summary["outside_vllm_s_per_request"] = (summary["mean_step_latency_s"] - server_s
                                             if server_s is not None else None)
    summary.update(pauses=decisions.get("pause", 0), restores=decisions.get("restore", 0),
                   engine_preemptions=preemptions(backends) - preempted,
                   failures=len(result.failures), synthetic_reply_steps=result.synthetic_reply_steps)
    return summary


def sim_cell(trace_path: Path, profile_path: Path, backends: int, policy: str, parallel: int,
             time_scale: float) -> dict[str, Any]:
    summary, tables = run_cell(CellSpec(trace=str(trace_path), policy=policy, parallel=parallel, replicas=backends,
                                        preset=str(profile_path), tool_time_scale=time_scale), keep_tables=True)
    assert tables is not None
    steps = tables.steps
    summary["engine_preemptions"] = summary["preemptions"]
    summary["steady_steps_per_min"] = steady_steps_per_min(steps, parallel)
    # As vLLM counts it: from reaching the engine to the last token.
    summary["engine_s_per_request"] = float((steps["done_s"] - steps["engine_arrival_s"]).mean())
    return summary


def pick(summary: dict[str, Any]) -> dict[str, Any]:
    keys = METRICS + ("steps", "duration_s", "restores", "engine_preemptions", "mean_queue_s",
                      "engine_s_per_request", "vllm_e2e_s_per_request", "outside_vllm_s_per_request",
                      "failures", "synthetic_reply_steps", "seed", "profile")
    return {k: summary[k] for k in keys if k in summary}


def rel(sim: float, live: float) -> float | None:
    return (sim - live) / live if live else None


def central(rows: list[dict[str, Any]], metric: str, how: str) -> float | None:
    values = [r[metric] for r in rows if r.get(metric) is not None]
    if not values:
        return None
    return float(statistics.median(values) if how == "median" else statistics.fmean(values))


def compare(live: list[dict[str, Any]], sim: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians: over live repeats, and over the simulations with each calibration (machine
    load moves both, and a burst of it can spoil one calibration)."""
    out: dict[str, Any] = {}
    for m in COMPARED:
        a, b = central(sim, m, "median"), central(live, m, "median")
        out[m] = {"sim": a, "live": b, "rel_error": rel(a, b) if a is not None and b is not None else None,
                  "live_runs": [r.get(m) for r in live], "sim_runs": [r.get(m) for r in sim]}
    return out


def markdown_table(result: dict[str, Any]) -> str:
    setup = result["setup"]
    def per_count(fmt: Callable[[dict[str, Any]], str]) -> str:
        counts = sorted({c["engines"] for c in result["calibrations"]})
        return "; ".join(f"{b} engine{'s together' if b > 1 else ''}: "
                         + ", ".join(fmt(c) for c in result["calibrations"] if c["engines"] == b) for b in counts)

    fits = per_count(lambda c: f"{c['fit']['r2']:.3f}")
    overheads = per_count(lambda c: f"{c['frontend_s'] * 1e3:.1f}")
    lines = [f"Command: `{result['command']}`", "",
             f"Trace: first {setup['programs']} SWE-bench programs, first {setup['steps']} steps, tokens x "
             f"{setup['token_scale']}, tool times x {setup['time_scale']}; vLLM {result['engine_version']} "
             f"backends of {result['capacity_tokens']:,} tokens of KV each. Live: `thunder serve` + `thunder run`, "
             f"{setup['repeats']} runs per cell, median. Sim: `thunder simulate` with each of the profiles "
             f"calibrated before every round of live runs and after the last, with as many engines at once as "
             f"the cell has backends (R^2 {fits}; front end ms per request {overheads}), median. "
             "Error = (sim - live) / live.", "",
             "| backends | policy | parallel | steps/min sim / live (err) | steady steps/min sim / live (err) | "
             "sim, engine only | KV hit rate sim / live (err) | "
             "mean step latency s sim / live (err) | p95 step latency s sim / live (err) | pauses sim / live | "
             "vLLM preemptions sim / live | engine s per request sim / live (err) | live s outside vLLM per request |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def cell(entry: dict[str, Any], metric: str, fmt: str) -> str:
        c = entry[metric]
        if c["sim"] is None or c["live"] is None:
            return "n/a"
        err = "" if c["rel_error"] is None else f" ({c['rel_error']:+.0%})"
        return f"{c['sim']:{fmt}} / {c['live']:{fmt}}{err}"

    for e in result["comparison"]:
        outside = e["outside_vllm_s_per_request"]["live"]
        lines.append(f"| {e['backends']} | {e['policy']} | {e['parallel']} | {cell(e, 'steps_per_min', '.0f')} | "
                     f"{cell(e, 'steady_steps_per_min', '.0f')} | "
                     f"{e['sim_engine_only']['steps_per_min']:.0f} | {cell(e, 'kv_hit_rate', '.3f')} | "
                     f"{cell(e, 'mean_step_latency_s', '.3f')} | {cell(e, 'p95_step_latency_s', '.3f')} | "
                     f"{e['pauses']['sim']:.0f} / {e['pauses']['live']:.0f} | "
                     f"{e['engine_preemptions']['sim']:.0f} / {e['engine_preemptions']['live']:.0f} | "
                     f"{cell(e, 'engine_s_per_request', '.3f')} | "
                     f"{'n/a' if outside is None else f'{outside:.3f}'} |")
    lines += ["", "Live self-agreement, spread of the runs of each cell ((max - min) / median): " + "; ".join(
        f"{a['policy']} x{a['parallel']} on {a['backends']}: steps/min {a['steps_per_min']:.0%}"
        + (f" (steady {a['steady_steps_per_min']:.0%})" if a.get("steady_steps_per_min") is not None else "")
        + f", hit rate {a['kv_hit_rate']:.0%}"
        for a in result["self_agreement"])]
    lines += ["", "Speedup over " + (result["speedup"][0]["baseline"] if result.get("speedup") else "the baseline")
              + ", paired (live: within a round; sim: within a calibration), median, sim / live: " + "; ".join(
                  f"{s['policy']} on {s['backends']} x{s['parallel']}: {s['sim']:.2f} / {s['live']:.2f} "
                  f"({s['rel_error']:+.0%}; live rounds {', '.join(f'{v:.2f}' for v in s['live_runs'])})"
                  for s in result.get("speedup", []))]
    lines += ["", "Policy ranking by steps/min at each level, sim / live (medians; then per calibration and per "
              "round of live runs, ties within 2%): " + "; ".join(
                  f"{n}: {r['sim']} / {r['live']} ({', '.join(r.get('sim_profiles', []))} / "
                  f"{', '.join(r.get('live_rounds', []))})" for n, r in result["ranking"].items())]
    timing = result["timing_s"]
    lines += ["", f"Wall time: vLLM start {timing['vllm_start']:.0f} s, calibrations {timing['calibrate']:.0f} s, "
                  f"live replays {timing['live']:.0f} s, simulations {timing['sim']:.1f} s, "
                  f"total {timing['total']:.0f} s."]
    return "\n".join(lines)


def write_doc(path: Path, table: str) -> None:
    text = path.read_text() if path.exists() else f"# Sim-to-real fidelity\n\n{TABLE_START}\n{TABLE_END}\n"
    if TABLE_START not in text:
        text += f"\n{TABLE_START}\n{TABLE_END}\n"
    head, rest = text.split(TABLE_START, 1)
    tail = rest.split(TABLE_END, 1)[1] if TABLE_END in rest else ""
    path.write_text(f"{head}{TABLE_START}\n{table}\n{TABLE_END}{tail}")


def calibrate(urls: list[str], serving_flags: str, name: str, repeats: int) -> dict[str, Any]:
    """A profile of ``urls`` measured together (``thunder calibrate`` with one ``--endpoint`` each)."""
    configs = [CalibrateConfig(endpoint=url, repeats=repeats) for url in urls]
    measured = asyncio.run(measure_together(configs, lambda f: default_probes(
        f.max_model_len, f.capacity_tokens, MAX_NUM_BATCHED_TOKENS)))
    profile = build_profile(measured, MAX_NUM_BATCHED_TOKENS, MAX_NUM_SEQS, name=name, serving_flags=serving_flags,
                            engines=len(urls))
    return {**profile, "engines": len(urls)}


def run_live(urls: list[str], plan: list[Cell], args: argparse.Namespace, trace: list[TraceProgram],
             work: Path, started: float, before_round: Callable[[int], None]
             ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every cell ``args.repeats`` times, interleaved (all cells, then all again), so that a
    slow minute on the shared machine hits one run of several cells, not every run of one.
    ``before_round`` runs before each round (a calibration: both sides measured close in time)."""
    live: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    seed = 0
    for round_index in range(args.repeats):
        before_round(round_index)
        for b, policy, n in plan:
            seed += 1
            key = {"backends": b, "policy": policy, "parallel": n}
            if time.perf_counter() - started > args.budget_s:
                skipped.append({**key, "reason": "run budget spent"})
                continue
            c0 = time.perf_counter()
            try:
                summary = live_cell(urls[:b], trace, policy, n, args.time_scale, seed=seed, work=work,
                                    timeout_s=args.cell_timeout_s)
            except asyncio.TimeoutError:
                skipped.append({**key, "reason": f"over {args.cell_timeout_s:.0f} s"})
                continue
            live.append({**key, **pick(summary), "seed": seed, "round": round_index})
            print(f"  live {b} backend(s) {policy:>8} x{n:<3} {summary['steps_per_min']:7.1f} steps/min  hit "
                  f"{summary['kv_hit_rate']:.3f}  pauses {summary['pauses']}  ({time.perf_counter() - c0:.0f} s)",
                  file=sys.stderr)
    return live, skipped


def order(values: dict[str, float], tie: float = 0.02) -> str:
    """Policies by descending value; neighbours within ``tie`` (relative) are written as equal."""
    names = sorted(values, key=lambda p: -values[p])
    text = names[0]
    for before, name in zip(names, names[1:]):
        text += (" = " if values[before] - values[name] <= tie * values[before] else " > ") + name
    return text


def paired_groups(rows: list[dict[str, Any]], level: tuple[int, int], key: str) -> list[dict[str, float]]:
    """steps/min by policy at ``level`` (backends, parallel) within each group of ``key``: a
    round of live runs (minutes apart), or one calibration's simulations."""
    groups: dict[Any, dict[str, float]] = {}
    for r in rows:
        if (r["backends"], r["parallel"]) == level:
            groups.setdefault(r.get(key), {})[r["policy"]] = r["steps_per_min"]
    return list(groups.values())


def paired_orders(rows: list[dict[str, Any]], level: tuple[int, int], key: str) -> list[str]:
    """The policy order within each group of ``key`` that ran every policy."""
    policies = {r["policy"] for r in rows}
    return [order(g) for g in paired_groups(rows, level, key) if len(g) == len(policies)]


def summarize_grid(plan: list[Cell], live: list[dict[str, Any]], sims: list[dict[str, Any]],
                   bare: list[dict[str, Any]]) -> dict[str, Any]:
    def rows(table: list[dict[str, Any]], cell: Cell) -> list[dict[str, Any]]:
        return [r for r in table if (r["backends"], r["policy"], r["parallel"]) == cell]

    comparison, agreement, ranking = [], [], {}
    for cell in plan:
        b, policy, n = cell
        key = {"backends": b, "policy": policy, "parallel": n}
        runs = rows(live, cell)
        if not runs:
            continue
        comparison.append({**key, **compare(runs, rows(sims, cell)),
                           "sim_engine_only": {m: central(rows(bare, cell), m, "median") for m in COMPARED}})
        if len(runs) > 1:
            agreement.append({**key, **{
                m: (max(r[m] for r in runs) - min(r[m] for r in runs)) / statistics.median(r[m] for r in runs)
                for m in ("steps_per_min", "steady_steps_per_min", "kv_hit_rate", "mean_step_latency_s")
                if all(r.get(m) is not None for r in runs)}})
    for b, n in dict.fromkeys((b, n) for b, _, n in plan):
        got = {e["policy"]: e["steps_per_min"] for e in comparison if (e["backends"], e["parallel"]) == (b, n)}
        if len(got) > 1:
            level = f"{b} backend{'s' if b > 1 else ''}, {n} parallel"
            ranking[level] = {side: order({p: got[p][side] for p in got}) for side in ("sim", "live")}
            # Paired: the policies of one round ran minutes apart, the simulations of one
            # profile share its calibration; the medians alone hide how consistent an order is.
            ranking[level]["live_rounds"] = paired_orders(live, (b, n), "round")
            ranking[level]["sim_profiles"] = paired_orders(sims, (b, n), "profile")
    return {"comparison": comparison, "self_agreement": agreement, "ranking": ranking,
            "speedup": speedups(plan, live, sims)}


def paired_ratios(rows: list[dict[str, Any]], level: tuple[int, int], policy: str, baseline: str,
                  key: str) -> list[float]:
    """steps/min of ``policy`` over ``baseline`` within each group of ``key``."""
    return [g[policy] / g[baseline] for g in paired_groups(rows, level, key)
            if policy in g and baseline in g and g[baseline]]


def speedups(plan: list[Cell], live: list[dict[str, Any]], sims: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What a policy study reads off the simulator: each policy's throughput over the first
    policy's, paired within a live round and within a calibration. Machine speed that
    drifts between rounds moves both policies of a round alike and cancels here."""
    baseline = plan[0][1]
    out = []
    for b, n in dict.fromkeys((b, n) for b, _, n in plan):
        for policy in dict.fromkeys(p for bb, p, nn in plan if (bb, nn) == (b, n) and p != baseline):
            live_r = paired_ratios(live, (b, n), policy, baseline, "round")
            sim_r = paired_ratios(sims, (b, n), policy, baseline, "profile")
            if live_r and sim_r:
                a, c = statistics.median(sim_r), statistics.median(live_r)
                out.append({"backends": b, "parallel": n, "policy": policy, "baseline": baseline,
                            "sim": a, "live": c, "rel_error": rel(a, c), "sim_runs": sim_r, "live_runs": live_r})
    return out


def plan_of(backends: list[int], levels: list[int], policies: list[str]) -> list[Cell]:
    """The cells in run order: by backend count, then parallel level, then policy."""
    return [(b, policy, n) for b in backends for n in levels for policy in policies]


def simulate_all(profiles: list[dict[str, Any]], plan: list[Cell], trace_path: Path, time_scale: float,
                 work: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every cell with every profile of as many engines as it has backends: the model as
    calibrated, and the engine alone (no front end)."""
    sims, bare = [], []
    for index, profile in enumerate(profiles):
        path, bare_path = work / f"profile-{index}.json", work / f"profile-{index}-bare.json"
        path.write_text(json.dumps(profile))
        bare_path.write_text(json.dumps({**profile, "request_overhead_s": 0.0, "frontend_s": 0.0}))
        for b, policy, n in plan:
            if b != profile["engines"]:
                continue
            key = {"backends": b, "policy": policy, "parallel": n, "profile": profile["name"]}
            sims.append({**key, **pick(sim_cell(trace_path, path, b, policy, n, time_scale))})
            bare.append({**key, **pick(sim_cell(trace_path, bare_path, b, policy, n, time_scale))})
    return sims, bare


def resimulate(out: Path, doc: Path) -> int:
    """The simulated side of ``out``'s runs again, with the simulator as it is now and the
    profiles calibrated then (the live side is kept): seconds instead of the live runs'
    quarter of an hour, after a change to the simulator."""
    result = json.loads(out.read_text())
    setup = result["setup"]
    plan = plan_of(setup["backends"], setup["parallel"], setup["policies"])
    trace_args = argparse.Namespace(trace=ROOT / setup.get("trace", "traces/swebench.jsonl"),
                                    programs=setup["programs"], steps=setup["steps"],
                                    token_scale=setup["token_scale"])
    profiles = [{**result["profile"], **{k: c[k] for k in ("name", "engines", "step_time", "request_overhead_s",
                                                          "frontend_s", "admit_full_prompt")}}
                for c in result["calibrations"]]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="thunder-fidelity-") as tmp:
        trace_path = Path(tmp) / "trace.jsonl"
        write_scaled_trace(trace_args, trace_path)
        result["sim"], result["sim_engine_only"] = simulate_all(profiles, plan, trace_path, setup["time_scale"],
                                                                Path(tmp))
    result["timing_s"]["sim"] = time.perf_counter() - started
    return resummarize(out, doc, result)


def resummarize(out: Path, doc: Path, result: dict[str, Any] | None = None) -> int:
    result = result if result is not None else json.loads(out.read_text())
    setup = result["setup"]
    plan = plan_of(setup["backends"], setup["parallel"], setup["policies"])
    result.update(summarize_grid(plan, result["live"], result["sim"], result["sim_engine_only"]))
    out.write_text(json.dumps(result, indent=2) + "\n")
    write_doc(doc, markdown_table(result))
    print(markdown_table(result))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_trace_arguments(parser)
    parser.add_argument("--parallel", default="8,16")
    parser.add_argument("--policies", default="vllm,thunder-paper")
    parser.add_argument("--backends", default="1,2", help="vLLM servers behind the proxy, one or more counts")
    parser.add_argument("--endpoints", default=None,
                        help="running vLLM servers to use (comma-separated URLs, the tiny model's settings) "
                             "instead of starting them")
    parser.add_argument("--repeats", type=int, default=3, help="live runs per cell (median reported)")
    parser.add_argument("--calibration-repeats", type=int, default=5, help="runs of every calibration probe")
    parser.add_argument("--budget-s", type=float, default=900.0, help="start no live run after this")
    parser.add_argument("--cell-timeout-s", type=float, default=120.0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fidelity.json")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "fidelity.md")
    parser.add_argument("--resimulate", action="store_true",
                        help="run no live replay: simulate --out's cells again with its stored profiles and the "
                             "current simulator, then rewrite --out and --doc's table")
    parser.add_argument("--resummarize", action="store_true",
                        help="run nothing: recompute the comparison of --out's runs and rewrite it and --doc's table")
    args = parser.parse_args()
    if args.resummarize:
        return resummarize(args.out, args.doc)
    if args.resimulate:
        return resimulate(args.out, args.doc)
    started = time.perf_counter()
    timing = {"vllm_start": 0.0, "calibrate": 0.0, "live": 0.0, "sim": 0.0}
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    levels = [int(v) for v in args.parallel.split(",") if v.strip()]
    counts = [int(v) for v in args.backends.split(",") if v.strip()]
    plan = plan_of(counts, levels, policies)

    with tempfile.TemporaryDirectory(prefix="thunder-fidelity-") as tmp, contextlib.ExitStack() as servers:
        work = Path(tmp)
        trace_path = work / "trace.jsonl"
        trace = write_scaled_trace(args, trace_path)
        t0 = time.perf_counter()
        if args.endpoints:
            urls = [u.strip().rstrip("/") for u in args.endpoints.split(",") if u.strip()]
            flags = f"running servers at {', '.join(urls)}"
            running: list[VllmServer] = []
        else:
            model = build_model(work / "tiny-llama")
            configs = [VllmServerConfig(model_dir=model, served_model_name="tiny-llama",
                                        log_path=work / f"vllm-{i}.log") for i in range(max(counts))]
            flags = configs[0].describe()
            running = [servers.enter_context(VllmServer(config)) for config in configs]
            urls = [server.url for server in running]
            timing["vllm_start"] = time.perf_counter() - t0
            print(f"{len(urls)} vLLM server(s) up in {timing['vllm_start']:.0f} s", file=sys.stderr)
        if len(urls) < max(counts):
            raise SystemExit(f"--backends {args.backends} needs {max(counts)} servers, got {len(urls)}")
        profiles: list[dict[str, Any]] = []

        def calibrate_now(label: str) -> None:
            # A cell with b backends is simulated with profiles of b engines measured at once:
            # on a small machine engines that run together are slower than one alone.
            for b in sorted(set(counts)):
                t0 = time.perf_counter()
                profiles.append(calibrate(urls[:b], flags, f"{label}-{b}x", args.calibration_repeats))
                timing["calibrate"] += time.perf_counter() - t0
                fit = profiles[-1]["calibration"]["fit"]
                print(f"  calibrated {b} engine(s) ({label}): R^2 {fit['r2']:.3f}", file=sys.stderr)

        t0 = time.perf_counter()
        try:
            live, skipped = run_live(urls, plan, args, trace, work, started,
                                     before_round=lambda i: calibrate_now(f"fidelity-round-{i + 1}"))
            calibrate_now("fidelity-after")
        except Exception:
            for server in running:
                print(server.log_tail(), file=sys.stderr)  # the logs live in the temporary folder
            raise
        timing["live"] = time.perf_counter() - t0 - timing["calibrate"]
        servers.close()
        t0 = time.perf_counter()
        sims, bare = simulate_all(profiles, plan, trace_path, args.time_scale, work)
        timing["sim"] = time.perf_counter() - t0
    timing["total"] = time.perf_counter() - started

    result: dict[str, Any] = {
        "command": " ".join(["python benchmarks/fidelity.py", *sys.argv[1:]]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared with other jobs), no GPU",
        "engine_version": profiles[0]["calibration"]["engine_version"],
        "capacity_tokens": profiles[0]["num_blocks"] * profiles[0]["block_size"],
        "setup": {"trace": str(args.trace.resolve().relative_to(ROOT)) if args.trace.resolve().is_relative_to(ROOT)
                  else str(args.trace), "programs": args.programs, "steps": args.steps, "token_scale": args.token_scale,
                  "time_scale": args.time_scale, "parallel": levels, "policies": policies, "backends": counts,
                  "repeats": args.repeats, "calibration_repeats": args.calibration_repeats,
                  "max_context_tokens": max(s.prompt_tokens + s.output_tokens for p in trace for s in p.steps),
                  "sum_final_contexts_tokens": sum(p.steps[-1].prompt_tokens + p.steps[-1].output_tokens
                                                   for p in trace)},
        "calibrations": [{"name": p["name"], "engines": p["engines"], "step_time": p["step_time"],
                          "request_overhead_s": p["request_overhead_s"], "frontend_s": p["frontend_s"],
                          "admit_full_prompt": p["admit_full_prompt"],
                          "frontend_check": p["calibration"]["frontend_check"],
                          "fit": p["calibration"]["fit"],
                          "residuals": p["calibration"]["residuals"], "load_probe": p["calibration"]["load_probe"],
                          "prefix_cache": p["calibration"]["prefix_cache"]} for p in profiles],
        "profile": {k: v for k, v in profiles[0].items() if k not in ("calibration", "engines")},
        **summarize_grid(plan, live, sims, bare),
        "live": live, "sim": sims, "sim_engine_only": bare, "skipped": skipped, "timing_s": timing,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    write_doc(args.doc, markdown_table(result))
    print(markdown_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
