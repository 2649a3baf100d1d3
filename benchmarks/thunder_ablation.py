"""What each of thunder's knobs does, side by side on one trace and preset.

Runs the policy variants below at one concurrency and prints throughput, hit
rate, re-prefilled tokens, preemptions and pauses, plus the vLLM baseline.

    python benchmarks/thunder_ablation.py [--trace traces/swebench.jsonl] [--parallel 96]
"""

from __future__ import annotations

import argparse
import os
from concurrent.futures import ProcessPoolExecutor

from thunder.sim.experiment import CellSpec, run_cell

VARIANTS: list[tuple[str, str, dict[str, object]]] = [
    ("vllm (baseline)", "vllm", {}),
    ("continuum", "continuum", {}),
    ("thunder, paper defaults (dt 5 s, x=2, lambda 1)", "thunder", {}),
    ("  decide on the timer only (public code)", "thunder", {"decide_on_events": False}),
    ("  no decay (x=1)", "thunder", {"decay_base": 1.0}),
    ("  count shared prefix per program (public code)", "thunder", {"shared_prefix_once": False}),
    ("  no decay + shared prefix per program", "thunder", {"decay_base": 1.0, "shared_prefix_once": False}),
    ("  place on most free backend (public code)", "thunder", {"placement": "most-free"}),
    ("  lambda 0.9 (10% headroom for decode growth)", "thunder", {"lambda_max": 0.9, "lambda_min": 0.9}),
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
    args = parser.parse_args()
    jobs = [(CellSpec(trace=args.trace, policy=policy, parallel=args.parallel, replicas=args.replicas,
                      preset=args.preset, policy_options=tuple(options.items())), label)
            for label, policy, options in VARIANTS]
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        results = list(pool.map(_run, jobs))
    base = results[0][1]["steps_per_min"]
    print(f"{args.trace}, {args.parallel} parallel, {args.replicas} replica(s), {args.preset}")
    print("| variant | steps/min | vs vLLM | KV hit rate | re-prefilled tokens | preemptions | pauses |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, s in results:
        print(f"| {label.strip()} | {s['steps_per_min']:.1f} | {s['steps_per_min'] / base:.2f}x | "
              f"{s['kv_hit_rate']:.3f} | {s['recompute_tokens']:,} | {s['preemptions']} | {s['pauses']} |")


if __name__ == "__main__":
    main()
