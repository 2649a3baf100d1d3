"""Every policy against the unbounded-KV bound, on four workloads (docs/policies.md).

For swebench, routing and science at several parallel levels (closed loop), and
an RL rollout of GRPO-style groups, runs vllm, continuum, autellix, gateway,
thunder-paper and thunder on the paper preset, plus the bound (same trace and
step-time model, KV unbounded), and writes one table per workload: steps/min,
share of the bound, KV hit rate, preemptions, hold times (p50/p99/max, and the
p99 of the largest prompt quartile over the smallest's), evictions per program
(max, Gini), output tokens/s, completed programs, and for rollouts the group
makespan.

    python benchmarks/policy_report.py                      # one pass of each trace
    python benchmarks/policy_report.py --horizon-s 7200     # steady state: traces cycled
    python benchmarks/policy_report.py --small              # seconds: CI's end-to-end check

Results go to benchmarks/results/policy_report[-steady].{json,md} (``--out`` to change).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

from dataclasses import replace

from thunder.sim.experiment import CellSpec, bound_cell, run_grid
from thunder.sim.presets import load_engine_spec
from thunder.traces import load_trace

REPO = Path(__file__).resolve().parents[1]
POLICIES = ("vllm", "continuum", "autellix", "gateway", "thunder-paper", "thunder")
WORKLOADS = {"swebench": "traces/swebench.jsonl", "routing": "traces/routing.jsonl",
             "science": "traces/science.jsonl"}
COLUMNS = [("steps/min", "steps_per_min", ".1f"), ("of bound", "of_bound", ".0%"),
           ("of fit bound", "of_fit_bound", ".0%"),
           ("hit rate", "kv_hit_rate", ".3f"), ("preempt", "preemptions", ".0f"),
           ("hold p50 s", "p50_hold_s", ".1f"), ("hold p99 s", "p99_hold_s", ".0f"),
           ("hold max s", "max_hold_s", ".0f"), ("p99 q4/q1", "p99_hold_q4_over_q1", ".1f"),
           ("evict max", "evictions_max", ".0f"), ("evict Gini", "evictions_gini", ".2f"),
           ("out tok/s", "output_tokens_per_s", ".0f"), ("done", "programs_finished", ".0f")]
ROLLOUT_COLUMNS = [("batch steps/min", "batch_steps_per_min", ".1f"), ("of bound", "of_bound", ".0%"),
                   ("makespan s", "makespan_s", ".0f"), ("group makespan mean s", "group_makespan_mean_s", ".0f"),
                   ("group makespan max s", "group_makespan_max_s", ".0f"),
                   ("straggler wait mean s", "group_straggler_wait_mean_s", ".0f"),
                   ("hit rate", "kv_hit_rate", ".3f"), ("preempt", "preemptions", ".0f"),
                   ("evict max", "evictions_max", ".0f")]


def cells(args: argparse.Namespace) -> list[CellSpec]:
    out = []
    for name, trace in WORKLOADS.items():
        if name not in args.workloads:
            continue
        for parallel in args.parallel:
            for policy in args.policies:
                out.append(CellSpec(trace=str(REPO / trace), policy=policy, parallel=parallel, preset=args.preset,
                                    horizon_s=args.horizon_s))
    if "rollout" in args.workloads:
        for policy in args.policies:
            out.append(CellSpec(trace=str(REPO / WORKLOADS["swebench"]), policy=policy, parallel=1,
                                preset=args.preset, mode="rollout", programs=args.rollout_programs,
                                group_size=args.group_size))
    return out


def fit_parallel(cell: CellSpec) -> int:
    """Programs whose contexts fit the real KV at once: capacity over the trace's mean prompt."""
    programs = load_trace(cell.trace).programs
    prompts = [s.prompt_tokens for p in programs for s in p.steps]
    capacity = load_engine_spec(cell.preset).capacity_tokens * cell.replicas
    return max(1, int(capacity // (sum(prompts) / len(prompts))))


def fit_bound_cell(cell: CellSpec) -> CellSpec:
    """The zero-recompute reference: unbounded KV at the parallelism the real KV holds
    (never above the cell's own). A policy above it is winning by time-sharing the cache."""
    return replace(bound_cell(cell), parallel=min(cell.parallel, fit_parallel(cell)))


def workload_of(cell: CellSpec) -> str:
    if cell.mode == "rollout":
        return "rollout"
    return next(name for name, trace in WORKLOADS.items() if cell.trace.endswith(trace))


def _format(value: object, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return format(value, fmt)


def table(rows: list[dict], columns: list[tuple[str, str, str]], by_parallel: bool) -> str:
    head = ["policy"] + (["parallel"] if by_parallel else []) + [c[0] for c in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        values = [row["policy"]] + ([str(row["parallel"])] if by_parallel else [])
        values += [_format(row.get(key), fmt) for _, key, fmt in columns]
        lines.append("| " + " | ".join(values) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parallel", default="24,48,96")
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--workloads", default="swebench,routing,science,rollout")
    parser.add_argument("--preset", default="paper-8xh100-glm46")
    parser.add_argument("--horizon-s", type=float, default=None)
    parser.add_argument("--rollout-programs", type=int, default=96)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--small", action="store_true", help="tiny grid in seconds (CI)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    args.parallel = [int(v) for v in args.parallel.split(",")]
    args.policies = args.policies.split(",")
    args.workloads = args.workloads.split(",")
    if args.small:
        args.parallel, args.policies, args.workloads = [16], ["vllm", "thunder-paper", "thunder"], ["routing",
                                                                                                 "rollout"]
        # A small GPU, so that KV binds within seconds of simulated time.
        args.horizon_s, args.rollout_programs, args.group_size = 300.0, 16, 4
        args.preset = "rtx5090-qwen3-8b"
    grid = cells(args)
    bounds = list(dict.fromkeys([bound_cell(c) for c in grid]
                                + [fit_bound_cell(c) for c in grid if c.mode == "closed"]))
    started = time.perf_counter()
    results = run_grid(grid + bounds, workers=args.workers)
    wall_s = time.perf_counter() - started
    bound_of = dict(zip(bounds, results[len(grid):]))
    rows: dict[str, list[dict]] = {}
    for cell, summary in zip(grid, results):
        key = "batch_steps_per_min" if cell.mode == "rollout" else "steps_per_min"
        bound = bound_of[bound_cell(cell)]
        summary["of_bound"] = summary[key] / bound[key] if bound[key] else float("nan")
        summary["bound_steps_per_min"] = bound[key]
        if cell.mode == "closed":
            fit = bound_of[fit_bound_cell(cell)]
            summary["fit_parallel"] = fit["parallel"]
            summary["fit_bound_steps_per_min"] = fit[key]
            summary["of_fit_bound"] = summary[key] / fit[key] if fit[key] else float("nan")
        rows.setdefault(workload_of(cell), []).append(summary)
    suffix = "-steady" if args.horizon_s and not args.small else ("-small" if args.small else "")
    out = args.out or REPO / "benchmarks" / "results" / f"policy_report{suffix}"
    out.parent.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/policy_report.py" + (f" --horizon-s {args.horizon_s:g}" if args.horizon_s and
                                                      not args.small else "") + (" --small" if args.small else "")
    sections = [f"Command: `{command}` ({len(grid) + len(bounds)} cells, {wall_s:.0f} s wall on "
                f"{os.cpu_count()} cores). Preset {args.preset}; "
                + (f"steady state: traces cycled, {args.horizon_s:g} s simulated per cell."
                   if args.horizon_s else "one pass of each trace (every program runs to its end).")]
    for workload, found in rows.items():
        found.sort(key=lambda r: (r["parallel"], args.policies.index(r["policy"])))
        if workload == "rollout":
            sections.append(f"### rollout: {args.rollout_programs} swebench programs in groups of "
                            f"{args.group_size}, all start at t=0\n\n" + table(found, ROLLOUT_COLUMNS, False))
        else:
            bounds_line = "; ".join(f"{r['parallel']} parallel: {r['bound_steps_per_min']:.1f} unbounded, "
                                    f"{r['fit_bound_steps_per_min']:.1f} at {r['fit_parallel']} parallel"
                                    for r in found if r["policy"] == found[0]["policy"])
            sections.append(f"### {workload}\n\nBounds (steps/min): {bounds_line}.\n\n" + table(found, COLUMNS, True))
    text = "\n\n".join(sections) + "\n"
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps({
        "command": command, "machine": f"{platform.machine()}, {os.cpu_count()} cores", "wall_s": wall_s,
        "rows": {k: v for k, v in rows.items()},
        "bounds": results[len(grid):]}, indent=1, default=str))
    print(text)
    print(f"wrote {out.with_suffix('.md')} and .json")


if __name__ == "__main__":
    main()
