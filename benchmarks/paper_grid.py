"""The paper's serving grid as one sweep: 3 workloads x 4 policies x 6 concurrency levels x 3 seeds.

216 simulation cells, run in local worker processes or as Ray tasks:

| workload | trace | preset (paper setup) |
|---|---|---|
| coding | ``traces/swebench.jsonl`` (99 real mini-swe-agent runs) | ``paper-8xh100-glm46`` |
| routing | ``traces/routing.jsonl`` (synthetic ToolOrchestra-like) | ``rtx5090-qwen3-8b`` |
| science | ``traces/science.jsonl`` (synthetic OpenHands science agent) | ``paper-8xh100-glm46`` |

Policies vllm, continuum, autellix, thunder; 24 to 144 parallel programs in
steps of 24; seeds 0, 1, 2 (each shuffles the trace's program order). To keep
every cell at a steady concurrency and the sweep's wall time bounded, each
cell stops at ``--horizon-s`` simulated seconds (1,800 by default), cycling
the trace with fresh ids: throughput is steps per minute over that window.

    python benchmarks/paper_grid.py [--executor local|ray] [--address ADDR] [--workers N]
                                    [--horizon-s 1800] [--out results/paper_grid]

Writes ``cells.csv`` (one row per cell) and ``table.md`` (mean over seeds,
speedup over vllm) to ``--out`` and prints the wall time.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import pandas as pd

from thunder.results.sweep import mean_over_seeds
from thunder.sim.experiment import CellSpec, run_grid

REPO = Path(__file__).resolve().parents[1]
WORKLOADS = {
    "coding": ("traces/swebench.jsonl", "paper-8xh100-glm46"),
    "routing": ("traces/routing.jsonl", "rtx5090-qwen3-8b"),
    "science": ("traces/science.jsonl", "paper-8xh100-glm46"),
}
POLICIES = ("vllm", "continuum", "autellix", "thunder-paper", "thunder")
PARALLEL = (24, 48, 72, 96, 120, 144)
SEEDS = (0, 1, 2)


def grid(horizon_s: float) -> list[CellSpec]:
    return [CellSpec(trace=str(REPO / trace), policy=policy, parallel=n, preset=preset, horizon_s=horizon_s,
                     seed=seed)
            for seed in SEEDS for trace, preset in WORKLOADS.values() for n in PARALLEL for policy in POLICIES]


def table(cells: pd.DataFrame) -> pd.DataFrame:
    frame = mean_over_seeds(cells)
    names = {str(REPO / trace): name for name, (trace, _) in WORKLOADS.items()}
    frame.insert(0, "workload", frame["trace"].map(names))
    base = frame[frame["policy"] == "vllm"].set_index(["workload", "parallel"])["steps_per_min"]
    keys = list(zip(frame["workload"], frame["parallel"]))
    frame["vs_vllm"] = frame["steps_per_min"].to_numpy() / base.loc[keys].to_numpy()
    return frame


def markdown(frame: pd.DataFrame) -> str:
    lines = ["| workload | parallel | " + " | ".join(POLICIES) + " |", "|---|---:|" + "---:|" * len(POLICIES)]
    for (workload, parallel), rows in frame.groupby(["workload", "parallel"], sort=False):
        by_policy = rows.set_index("policy")
        cells = [f"{by_policy.loc[p, 'steps_per_min']:.1f} ({by_policy.loc[p, 'vs_vllm']:.2f}x)" for p in POLICIES]
        lines.append(f"| {workload} | {parallel} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executor", choices=("local", "ray"), default="local")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: a local Ray instance)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="local worker processes")
    parser.add_argument("--horizon-s", type=float, default=1800.0)
    parser.add_argument("--out", type=Path, default=REPO / "results" / "paper_grid")
    args = parser.parse_args()
    cells = grid(args.horizon_s)
    done = [0]

    def progress(summary: dict) -> None:
        done[0] += 1
        if done[0] % 24 == 0 or done[0] == len(cells):
            print(f"  {done[0]}/{len(cells)} cells, {time.perf_counter() - started:.0f} s", flush=True)

    started = time.perf_counter()
    if args.executor == "ray":
        from thunder.sim.ray_grid import run_grid_ray
        results = run_grid_ray(cells, address=args.address, on_result=progress)
    else:
        results = run_grid(cells, workers=args.workers, on_result=progress)
    wall_s = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(results)
    frame.to_csv(args.out / "cells.csv", index=False)
    text = markdown(table(frame))
    (args.out / "table.md").write_text(text + "\n")
    print(text)
    print(f"{len(cells)} cells ({len(WORKLOADS)} workloads x {len(POLICIES)} policies x {len(PARALLEL)} levels x "
          f"{len(SEEDS)} seeds), horizon {args.horizon_s:.0f} s, executor {args.executor}, "
          f"{args.workers if args.executor == 'local' else 'ray'} workers: {wall_s:.0f} s wall")


if __name__ == "__main__":
    main()
