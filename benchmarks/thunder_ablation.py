"""What each of thunder's knobs does, side by side on one trace and preset.

Runs the policy variants below at one concurrency and prints throughput, hit
rate, re-prefilled tokens, preemptions and pauses, plus the vLLM baseline.

    python benchmarks/thunder_ablation.py [--trace traces/swebench.jsonl] [--parallel 96]
"""

from __future__ import annotations

import argparse
import os
from concurrent.futures import ProcessPoolExecutor

from thunder.sim.experiment import CellSpec, bound_cell, run_cell

VARIANTS: list[tuple[str, str, dict[str, object]]] = [
    ("vllm (baseline)", "vllm", {}),
    ("continuum", "continuum", {}),
    ("thunder-paper: paper defaults (dt 5 s, x=2, lambda 1)", "thunder-paper", {}),
    ("  decide on the timer only (public code)", "thunder-paper", {"decide_on_events": False}),
    ("  no decay (x=1)", "thunder-paper", {"decay_base": 1.0}),
    ("  count shared prefix per program (public code)", "thunder-paper", {"shared_prefix_once": False}),
    ("  no decay + shared prefix per program", "thunder-paper", {"decay_base": 1.0, "shared_prefix_once": False}),
    ("  place on most free backend (public code)", "thunder-paper", {"placement": "most-free"}),
    ("  lambda 0.9 (10% headroom for decode growth)", "thunder-paper", {"lambda_max": 0.9, "lambda_min": 0.9}),
    # thunder's default, then each of its mechanisms turned off on its own (docs/policies.md)
    ("thunder (default)", "thunder", {}),
    ("  no growth reservation", "thunder", {"reserve_quantile": 0.0}),
    ("  route before the check (paper order)", "thunder", {"check_first": False}),
    ("  paper decay x^-t instead of learned tool times", "thunder", {"tool_decay": False}),
    ("  shortest-first pauses (paper) instead of min-cost", "thunder", {"pause_rule": "shortest-first"}),
    ("  no eviction weighting", "thunder", {"eviction_weight": 0.0}),
    ("  no prefix affinity on restore", "thunder", {"affinity_share": 0.0}),
    ("  no aging, no drain, no wait bound", "thunder", {"aging_s": float("inf"), "drain_after_s": float("inf"),
                                                       "max_wait_s": float("inf")}),
    ("  no drain for long waits", "thunder", {"drain_after_s": float("inf")}),
    ("  count shared prefix per program", "thunder", {"shared_prefix_once": False}),
    ("  dt 5 s (paper) instead of 2 s", "thunder", {"interval_s": 5.0}),
    ("  no restore headroom", "thunder", {"restore_headroom": 0.0}),
    ("  restores in the step that paused", "thunder", {"restore_after_relief": True}),
]


def _run(args: tuple[CellSpec, str]) -> tuple[str, dict]:
    cell, label = args
    return label, run_cell(cell)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trace", default="traces/swebench.jsonl")
    parser.add_argument("--parallel", type=int, default=96)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--preset", default="paper-8xh100-glm46")
    parser.add_argument("--horizon-s", type=float, default=None,
                        help="steady state: cycle the trace and stop here (default: one pass of the trace)")
    parser.add_argument("--only", default="", help="comma-separated policies to keep (e.g. thunder)")
    args = parser.parse_args()
    keep = {p for p in args.only.split(",") if p}
    variants = [v for v in VARIANTS if not keep or v[1] in keep or v[1] == "vllm"]
    jobs = [(CellSpec(trace=args.trace, policy=policy, parallel=args.parallel, replicas=args.replicas,
                      preset=args.preset, horizon_s=args.horizon_s, policy_options=tuple(options.items())), label)
            for label, policy, options in variants]
    jobs.append((bound_cell(jobs[0][0]), "unbounded KV (the bound)"))
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        results = list(pool.map(_run, jobs))
    base = results[0][1]["steps_per_min"]
    print(f"{args.trace}, {args.parallel} parallel, {args.replicas} replica(s), {args.preset}")
    bound = results[-1][1]["steps_per_min"]
    print("| variant | steps/min | vs vLLM | of bound | KV hit rate | re-prefilled tokens | preemptions | pauses "
          "| max wait s | p99 wait q4/q1 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, s in results:
        print(f"| {label.strip()} | {s['steps_per_min']:.1f} | {s['steps_per_min'] / base:.2f}x | "
              f"{s['steps_per_min'] / bound:.0%} | {s['kv_hit_rate']:.3f} | {s['recompute_tokens']:,} | "
              f"{s['preemptions']} | {s['pauses']} | {s['max_queue_s']:.0f} | {s['p99_hold_q4_over_q1']:.1f} |")


if __name__ == "__main__":
    main()
