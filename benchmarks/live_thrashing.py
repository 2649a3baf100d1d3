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
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from fidelity import Proxy, add_trace_arguments, build_model, metrics_value, write_scaled_trace  # noqa: E402
from thunder.metrics import build_tables, summarize  # noqa: E402
from thunder.runtime.replay import ReplayConfig, replay  # noqa: E402
from thunder.runtime.vllm_server import VllmServer, VllmServerConfig  # noqa: E402
from thunder.trace import TraceProgram  # noqa: E402


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
               synthetic_reply_steps=result.synthetic_reply_steps,
               **(held_times(export) if proxy else {"mean_held_s": None, "max_held_s": None}))
    return out


def fmt(v: Any, spec: str) -> str:
    return "n/a" if v is None else f"{v:{spec}}"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| regime | vLLM servers | arm | steps | steps/min | KV hit rate | re-prefilled tokens | "
             "vLLM preemptions | pauses | mean / max held s per program | wall s |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['regime']} | {r['servers']} | {r['arm']} | skipped: {r['skipped']} "
                         "| | | | | | | |")
            continue
        held = ("-" if r["mean_held_s"] is None
                else f"{r['mean_held_s']:.1f} / {r['max_held_s']:.1f}")
        lines.append(f"| {r['regime']} | {r['servers']} | {r['arm']} | {r['steps']} | {r['steps_per_min']:.0f} | "
                     f"{r['kv_hit_rate']:.3f} | {r['reprefilled_tokens']:,} | {r['engine_preemptions']:.0f} | "
                     f"{r['pauses']} | {held} | {r['duration_s']:.0f} |")
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
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "live_thrashing.json")
    args = parser.parse_args()
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    seed = 100  # distinct prompts per run: no run hits another's leftovers in the prefix cache

    def run(regime: str, backends: list[str], policy: str | None, time_scale: float, timeout_s: float) -> None:
        nonlocal seed
        seed += 1
        label = {"regime": regime, "servers": len(backends), "arm": f"serve --policy {policy}" if policy else "direct",
                 "time_scale": time_scale, "seed": seed}
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
        print(f"  {regime:>12} {len(backends)}x vLLM {label['arm']:>22}: {r['steps_per_min']:6.1f} steps/min "
              f"hit {r['kv_hit_rate']:.3f} re-prefill {r['reprefilled_tokens']} pauses {r['pauses']} "
              f"({r['duration_s']:.0f} s, {time.perf_counter() - started:.0f} s in)", file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="thunder-thrash-") as tmp:
        work = Path(tmp)
        trace = write_scaled_trace(args, work / "trace.jsonl")  # run() reads it when called
        model = build_model(work / "tiny-llama")
        configs = [VllmServerConfig(model_dir=model, served_model_name="tiny-llama", log_path=work / f"vllm-{i}.log")
                   for i in range(2)]
        with VllmServer(configs[0]) as a:
            print(f"vLLM 1 up ({time.perf_counter() - started:.0f} s in)", file=sys.stderr)
            eb, tb = "engine-bound", "tool-bound"
            for policy in (None, "vllm", "thunder"):
                run(eb, [a.url], policy, args.time_scale, args.cell_timeout_s)
            for policy in (None, "thunder"):
                run(tb, [a.url], policy, args.tool_time_scale, args.tool_cell_timeout_s)
            if not args.no_dp and time.perf_counter() - started < args.budget_s - 60:
                with VllmServer(configs[1]) as b:
                    print(f"vLLM 2 up ({time.perf_counter() - started:.0f} s in)", file=sys.stderr)
                    for policy in ("vllm", "thunder"):
                        run(eb, [a.url, b.url], policy, args.time_scale, args.cell_timeout_s)
            else:
                for policy in ("vllm", "thunder"):
                    rows.append({"regime": eb, "servers": 2, "arm": f"serve --policy {policy}",
                                 "skipped": "run budget spent" if not args.no_dp else "--no-dp"})
    result = {
        "command": " ".join(["python benchmarks/live_thrashing.py", *sys.argv[1:]]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared with other jobs), no GPU",
        "setup": {"programs": args.programs, "steps": args.steps, "token_scale": args.token_scale,
                  "time_scale": args.time_scale, "tool_time_scale": args.tool_time_scale,
                  "parallel": args.parallel, "kv_cache_tokens_per_server": configs[0].kv_cache_bytes // 1024,
                  "max_model_len": configs[0].max_model_len,
                  "sum_final_contexts_tokens": sum(p.steps[-1].prompt_tokens + p.steps[-1].output_tokens
                                                   for p in trace)},
        "rows": rows,
        "total_s": time.perf_counter() - started,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown_table(rows))
    print(f"\ntotal {result['total_s']:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
