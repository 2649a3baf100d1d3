"""The paper's Table 2 analogue: an RL rollout of 144 programs on two replicas.

Each cell is ``thunder simulate --mode rollout --programs 144 --replicas 2``
on the paper preset (GLM-4.6-FP8 on one 8xH100 node per replica). Workloads:

* mini-SWE-agent: ``traces/swebench.jsonl``, 99 real runs, cycled to 144;
* OpenHands-like: ``traces/science.jsonl``, the synthetic science-agent
  workload (OpenHands on ScienceAgentBench: a 5,000-token shared prompt,
  long and heavy-tailed tools). We have no OpenHands SWE-bench trace; this
  is the closest OpenHands workload we have, not the paper's.

Policies: ``gateway`` (vLLM engines behind the SGLang gateway, the paper's
baseline), ``vllm`` (vLLM's sticky KV-aware router), ``power-of-two``,
``continuum``, ``autellix``, ``thunder-paper`` (the paper's policy) and ``thunder`` (the default). Seeds shuffle which programs are
cycled into the batch; the table shows the mean over seeds.

    python benchmarks/rollout_table2.py [--seeds 0,1,2] [--workers 2] [--plot docs/img/rollout_memory.png]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from thunder.results.plots import memory_balance_plot
from thunder.results.sweep import mean_over_seeds
from thunder.sim.experiment import CellSpec, run_cell, run_grid

REPO = Path(__file__).resolve().parents[1]
WORKLOADS = {"mini-SWE-agent": "traces/swebench.jsonl", "OpenHands-like (science)": "traces/science.jsonl"}
POLICIES = ["gateway", "vllm", "power-of-two", "continuum", "autellix", "thunder-paper", "thunder"]
PAPER = {"mini-SWE-agent": (375.4, 671.8), "OpenHands-like (science)": (69.1, 270.8)}  # gateway, thunder


def cells(seeds: list[int]) -> list[CellSpec]:
    return [CellSpec(trace=str(REPO / path), policy=policy, parallel=144, replicas=2, mode="rollout",
                     programs=144, seed=seed)
            for seed in seeds for path in WORKLOADS.values() for policy in POLICIES]


def table(results: list[dict]) -> pd.DataFrame:
    frame = mean_over_seeds(pd.DataFrame(results))
    names = {str(REPO / path): name for name, path in WORKLOADS.items()}
    frame["workload"] = frame["trace"].map(names)
    base = frame[frame["policy"] == "gateway"].set_index("workload")["batch_steps_per_min"]
    frame["vs_gateway"] = frame["batch_steps_per_min"] / frame["workload"].map(base)
    return frame


def markdown(frame: pd.DataFrame) -> str:
    lines = ["| workload | policy | steps/min (batch) | vs gateway | makespan (min) | KV hit rate | "
             "imbalance peak | mean | time >20% (min) | straggler tail (s) | preemptions |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in frame.itertuples():
        lines.append(
            f"| {row.workload} | {row.policy} | {row.batch_steps_per_min:.1f} ± {row.steps_per_min_std:.1f} | "
            f"{row.vs_gateway:.2f}x | {row.makespan_s / 60:.1f} | {row.kv_hit_rate:.3f} | "
            f"{row.imbalance_peak:.2f} | {row.imbalance_mean:.3f} | {row.imbalance_above_s / 60:.1f} | "
            f"{row.straggler_tail_s:.0f} | {row.preemptions:.0f} |")
    return "\n".join(lines)


def plot(path: Path) -> None:
    runs = {}
    for name, trace in WORKLOADS.items():
        for policy in ("gateway", "thunder-paper", "thunder"):
            cell = CellSpec(trace=str(REPO / trace), policy=policy, parallel=144, replicas=2, mode="rollout",
                            programs=144)
            summary, tables = run_cell(cell, keep_tables=True)
            assert tables is not None
            runs[f"{name}, {policy}: {summary['batch_steps_per_min']:.0f} steps/min, imbalance peak "
                 f"{summary['imbalance_peak']:.2f}, >20% for {summary['imbalance_above_s'] / 60:.1f} min"] = \
                tables.timeseries
    memory_balance_plot(runs, path, "Rollout of 144 programs on 2 replicas (seed 0): KV in use per replica")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--plot", type=Path, default=REPO / "docs" / "img" / "rollout_memory.png")
    parser.add_argument("--csv", type=Path, default=None, help="also write every cell's summary here")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    started = time.perf_counter()
    results = run_grid(cells(seeds), workers=args.workers)
    if args.csv:
        pd.DataFrame(results).to_csv(args.csv, index=False)
    print(markdown(table(results)))
    for name, (gateway, thunder) in PAPER.items():
        print(f"paper, {name.split(' ')[0]}: gateway {gateway}, ThunderAgent {thunder} ({thunder / gateway:.2f}x)")
    plot(args.plot)
    print(f"wrote {args.plot}; {len(results)} cells in {time.perf_counter() - started:.0f} s wall")


if __name__ == "__main__":
    main()
