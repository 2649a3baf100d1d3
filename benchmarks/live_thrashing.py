#!/usr/bin/env python3
"""The thrashing experiment on real vLLM: direct vs. ``thunder serve --policy vllm|thunder``.

    python benchmarks/live_thrashing.py          # about 10 minutes on two cores

The trace is the one of ``benchmarks/fidelity.py`` (first 16 SWE-bench programs,
first 20 steps, tokens x 0.25: one context fits ``max_model_len`` 4096, the
contexts together exceed the 16,384-token KV cache), replayed 16 programs in
parallel. Cells, in this order (each replay has a timeout, and no cell starts
after ``--budget-s``):

1. engine-bound (tool times x ``--time-scale``, 0.1), one vLLM: straight to vLLM
   (``thunder run --endpoint http://vllm``), through ``thunder serve --policy
   vllm`` (pass-through), through ``--policy thunder``;
2. tool-bound (tool times x 1.0), one vLLM: direct and ``--policy thunder``;
3. data-parallel, engine-bound: a second vLLM (also 16 MiB of KV) is started and
   both sit behind ``thunder serve --policy vllm`` and ``--policy thunder``.

With ``--rounds N`` every cell runs N times, interleaved (round 1 of each arm
of a group, then round 2, ...), so slow drift of a shared machine hits every
arm alike; a second table gives each arm's steps/min as median [min, max] over
the rounds and its ratio to the group's reference arm (direct for one
server, ``--policy vllm`` for two), computed round by round. ``--layers``,
``--hidden`` and ``--heads`` build a larger random-weight model (see
``scripts/build_tiny_model.py``), with ``--kv-tokens`` of KV per server
whatever its bytes per token: prefill then costs more per token, so
re-prefill is a larger share of a step. ``--no-tool-bound`` skips cell 2.

Per cell: steps/min, KV hit rate (cached / prompt tokens, from the responses'
usage), re-prefilled tokens (prompt tokens minus cached tokens), vLLM
preemptions (``/metrics``), and the time the proxy held each program (its
exported ``programs.csv``: ``queue_s`` summed over the program's steps).
Writes ``benchmarks/results/live_thrashing.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from fidelity import Proxy, add_trace_arguments, metrics_value, write_scaled_trace  # noqa: E402
from thunder.results.tables import build_tables, summarize  # noqa: E402
from thunder.runtime.engines.launcher import VllmServer, VllmServerConfig, default_vllm_venv  # noqa: E402
from thunder.runtime.replay import ReplayConfig, replay  # noqa: E402
from thunder.traces import TraceProgram  # noqa: E402


def held_times(export_dir: Path) -> dict[str, float | None]:
    """Per program, seconds the proxy held its requests (summed over its steps)."""
    path = export_dir / "programs.csv"
    if not path.exists():
        return {"mean_held_s": None, "max_held_s": None}
    with open(path) as f:
        held = [float(row["queue_s"] or 0.0) for row in csv.DictReader(f)]
    return {"mean_held_s": sum(held) / len(held) if held else None, "max_held_s": max(held) if held else None}


def arm(backends: list[str], policy: str | None, trace: list[TraceProgram], parallel: int, time_scale: float,
        seed: int, work: Path, timeout_s: float) -> dict[str, Any]:
    """One replay: straight to ``backends[0]`` (``policy`` None) or through a fresh proxy."""
    export = work / f"export-{policy}-{len(backends)}-{seed}"
    proxy = Proxy(",".join(backends), policy, export) if policy else None
    preempted = sum(metrics_value(b, "vllm:num_preemptions_total") for b in backends)
    try:
        config = ReplayConfig(endpoint=proxy.url if proxy else backends[0], parallel=parallel,
                              time_scale=time_scale, token_scale=1.0, seed=seed)
        result = asyncio.run(asyncio.wait_for(replay(trace, config), timeout=timeout_s))
    finally:
        proxy_cpu_s = proxy.cpu_s() if proxy else None  # the proxy shares the engines' cores here
        decisions = proxy.stop() if proxy else {}
    time.sleep(1.0)  # vLLM's counters update in batches
    tables = build_tables(result.steps, result.programs, [], [])
    s = summarize(tables, None, result.duration_s, policy=policy or "direct", parallel=parallel)
    prompt = sum(int(r.get("prompt_tokens") or 0) for r in result.steps)
    cached = sum(int(r.get("cached_tokens") or 0) for r in result.steps)
    out = {k: s[k] for k in ("steps", "duration_s", "steps_per_min", "kv_hit_rate", "mean_step_latency_s",
                             "p95_step_latency_s")}
    out.update(prompt_tokens=prompt, cached_tokens=cached, reprefilled_tokens=prompt - cached,
               engine_preemptions=sum(metrics_value(b, "vllm:num_preemptions_total") for b in backends) - preempted,
               pauses=decisions.get("pause", 0), restores=decisions.get("restore", 0),
               migrations=decisions.get("migrate", 0), failures=len(result.failures),
               synthetic_reply_steps=result.synthetic_reply_steps, proxy_cpu_s=proxy_cpu_s,
               **(held_times(export) if proxy else {"mean_held_s": None, "max_held_s": None}))
    return out


def build_model(directory: Path, layers: int, hidden: int, heads: int) -> Path:
    """The tiny model of ``scripts/build_tiny_model.py`` in the given shape (random weights at serve time)."""
    subprocess.run([str(default_vllm_venv() / "bin" / "python"), str(ROOT / "scripts" / "build_tiny_model.py"),
                    str(directory), "--layers", str(layers), "--hidden", str(hidden), "--heads", str(heads)],
                   check=True, capture_output=True, timeout=300)
    return directory


def spread(values: list[float], spec: str = ".2f") -> str:
    """Median [min, max]; one value alone."""
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:{spec}}"
    return f"{statistics.median(values):{spec}} [{min(values):{spec}}, {max(values):{spec}}]"


def rounds_table(rows: list[dict[str, Any]]) -> str:
    """Per arm: steps/min over the rounds, and its ratio to the group's reference arm, round by round."""
    done = [r for r in rows if "skipped" not in r]
    groups: dict[tuple[str, int], dict[str, dict[int, float]]] = {}
    for r in done:
        groups.setdefault((r["regime"], r["servers"]), {}).setdefault(r["arm"], {})[r["round"]] = r["steps_per_min"]
    lines = ["| regime | vLLM servers | arm | rounds | steps/min median [min, max] | "
             "ratio to reference, median [min, max] |", "|---|---:|---|---:|---:|---:|"]
    for (regime, servers), arms in groups.items():
        reference = arms.get("direct") or arms.get("serve --policy vllm") or {}
        for arm, by_round in arms.items():
            ratios = [v / reference[i] for i, v in by_round.items() if reference.get(i)]
            lines.append(f"| {regime} | {servers} | {arm} | {len(by_round)} | "
                         f"{spread(list(by_round.values()), '.0f')} | {spread(ratios)} |")
    return "\n".join(lines)


def fmt(v: Any, spec: str) -> str:
    return "n/a" if v is None else f"{v:{spec}}"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| regime | vLLM servers | arm | steps | steps/min | KV hit rate | re-prefilled tokens | "
             "vLLM preemptions | pauses | mean / max held s per program | proxy CPU s | wall s |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['regime']} | {r['servers']} | {r['arm']} | skipped: {r['skipped']} "
                         "| | | | | | | | |")
            continue
        held = ("-" if r["mean_held_s"] is None
                else f"{r['mean_held_s']:.1f} / {r['max_held_s']:.1f}")
        lines.append(f"| {r['regime']} | {r['servers']} | {r['arm']} | {r['steps']} | {r['steps_per_min']:.0f} | "
                     f"{r['kv_hit_rate']:.3f} | {r['reprefilled_tokens']:,} | {r['engine_preemptions']:.0f} | "
                     f"{r['pauses']} | {held} | {fmt(r.get('proxy_cpu_s'), '.1f')} | {r['duration_s']:.0f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_trace_arguments(parser, time_scale_help="engine-bound cells")
    parser.add_argument("--tool-time-scale", type=float, default=1.0, help="the tool-bound cell")
    parser.add_argument("--parallel", type=int, default=16)
    parser.add_argument("--budget-s", type=float, default=720.0, help="start no cell after this")
    parser.add_argument("--cell-timeout-s", type=float, default=120.0, help="engine-bound replays")
    parser.add_argument("--tool-cell-timeout-s", type=float, default=240.0, help="tool-bound replays")
    parser.add_argument("--no-dp", action="store_true", help="skip the two-server cells")
    parser.add_argument("--no-tool-bound", action="store_true", help="skip the tool-bound cells")
    parser.add_argument("--no-single", action="store_true", help="skip the one-server cells (1 and 2)")
    parser.add_argument("--rounds", type=int, default=1, help="runs of every cell, interleaved")
    parser.add_argument("--policies", default="vllm,thunder,thunder-paper",
                        help="proxy arms, comma-separated (engine-bound cells; tool-bound and two-server cells "
                             "run the program-aware ones)")
    parser.add_argument("--layers", type=int, default=2, help="model shape (default: the 1 KiB/token model)")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-tokens", type=int, default=16_384, help="KV cache per server (tokens)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "live_thrashing.json")
    args = parser.parse_args()
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    aware = [p for p in policies if p.startswith("thunder")]  # tool-bound: direct vs. the program-aware arms
    dp_arms = ["vllm", *aware]  # two servers: request-level routing is the reference
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    seed = 100  # distinct prompts per run: no run hits another's leftovers in the prefix cache

    def run(regime: str, backends: list[str], policy: str | None, time_scale: float, timeout_s: float,
            round_index: int = 0) -> None:
        nonlocal seed
        seed += 1
        label = {"regime": regime, "servers": len(backends), "arm": f"serve --policy {policy}" if policy else "direct",
                 "time_scale": time_scale, "seed": seed, "round": round_index}
        if time.perf_counter() - started > args.budget_s:
            rows.append({**label, "skipped": "run budget spent"})
            print(f"  skip {label['arm']} ({regime}, {len(backends)} vLLM): budget", file=sys.stderr)
            return
        try:
            r = arm(backends, policy, trace, args.parallel, time_scale, seed, work, timeout_s)
        except asyncio.TimeoutError:
            rows.append({**label, "skipped": f"over {timeout_s:.0f} s"})
            return
        rows.append({**label, **r})
        cpu = "" if r["proxy_cpu_s"] is None else f" proxy CPU {r['proxy_cpu_s']:.1f} s"
        print(f"  {regime:>12} {len(backends)}x vLLM {label['arm']:>22}: {r['steps_per_min']:6.1f} steps/min "
              f"hit {r['kv_hit_rate']:.3f} re-prefill {r['reprefilled_tokens']} pauses {r['pauses']}{cpu} "
              f"({r['duration_s']:.0f} s, {time.perf_counter() - started:.0f} s in)", file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="thunder-thrash-") as tmp:
        work = Path(tmp)
        trace = write_scaled_trace(args, work / "trace.jsonl")  # run() reads it when called
        model = build_model(work / "tiny-llama", args.layers, args.hidden, args.heads)
        kv_bytes = args.kv_tokens * 4 * args.layers * args.hidden  # K and V x layers x hidden x 2 bytes
        configs = [VllmServerConfig(model_dir=model, served_model_name="tiny-llama", kv_cache_bytes=kv_bytes,
                                    log_path=work / f"vllm-{i}.log") for i in range(2)]
        with VllmServer(configs[0]) as a:
            print(f"vLLM 1 up ({time.perf_counter() - started:.0f} s in)", file=sys.stderr)
            eb, tb = "engine-bound", "tool-bound"
            for r in range(0 if args.no_single else args.rounds):
                for policy in (None, *policies):
                    run(eb, [a.url], policy, args.time_scale, args.cell_timeout_s, r)
            for r in range(0 if args.no_tool_bound or args.no_single else args.rounds):
                for policy in (None, *aware):
                    run(tb, [a.url], policy, args.tool_time_scale, args.tool_cell_timeout_s, r)
            if not args.no_dp and time.perf_counter() - started < args.budget_s - 60:
                with VllmServer(configs[1]) as b:
                    print(f"vLLM 2 up ({time.perf_counter() - started:.0f} s in)", file=sys.stderr)
                    for r in range(args.rounds):
                        for policy in dp_arms:
                            run(eb, [a.url, b.url], policy, args.time_scale, args.cell_timeout_s, r)
            else:
                for policy in dp_arms:
                    rows.append({"regime": eb, "servers": 2, "arm": f"serve --policy {policy}",
                                 "skipped": "run budget spent" if not args.no_dp else "--no-dp"})
    result = {
        "command": " ".join(["python benchmarks/live_thrashing.py", *sys.argv[1:]]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared with other jobs), no GPU",
        "setup": {"programs": args.programs, "steps": args.steps, "token_scale": args.token_scale,
                  "time_scale": args.time_scale, "tool_time_scale": args.tool_time_scale,
                  "parallel": args.parallel, "kv_cache_tokens_per_server": args.kv_tokens,
                  "model": {"layers": args.layers, "hidden": args.hidden, "heads": args.heads,
                            "kv_bytes_per_token": 4 * args.layers * args.hidden},
                  "rounds": args.rounds, "load_average_at_end": os.getloadavg(),
                  "max_model_len": configs[0].max_model_len,
                  "sum_final_contexts_tokens": sum(p.steps[-1].prompt_tokens + p.steps[-1].output_tokens
                                                   for p in trace)},
        "rows": rows,
        "total_s": time.perf_counter() - started,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown_table(rows))
    if args.rounds > 1:
        print()
        print(rounds_table(rows))
    print(f"\ntotal {result['total_s']:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
