"""Tool resources (paper, sections 3.3 and 4.4): keep vs on-demand vs program-aware in the simulator.

Three tables, each a markdown table on stdout:

1. ``traces/science.jsonl`` (64 programs) run to the end.
2. A larger synthetic science trace (``thunder trace synth --workload science
   --programs 400 --seed 1``), closed loop cycled over a fixed horizon so
   that keep's disk grows with every processed program, as in Figure 2b.
3. The same with a disk cap on the tool host: what each policy does when
   disk runs out.
4. The same trace at other concurrencies (``--sweep``): how much of the
   environment wait prepare-ahead hides depends on how long programs queue.
5. Program-aware with other ``lookahead`` values (``--lookaheads``): more
   environments prepared ahead hide more setup time and hold more disk.

Each table also has a row without tool environments (``none``), the
throughput the scheduler alone would reach.

    python benchmarks/tool_resources.py [--parallel 128] [--horizon-s 7200] [--workers 2] [--plot disk.png]

``--plot`` draws the disk in use over time of table 2 (the paper's Figure 2b).
"""

from __future__ import annotations

import argparse
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

from thunder.sim.experiment import CellSpec, run_cell
from thunder.traces import write_trace
from thunder.traces.synth import synthesize

POLICIES = (None, "keep", "on-demand", "program-aware")
GB = 1e9


def _run(cell: CellSpec) -> tuple[dict[str, Any], pd.DataFrame | None]:
    summary, tables = run_cell(cell, keep_tables=True)
    assert tables is not None
    programs = tables.programs
    summary["mean_program_s"] = float((programs["finished_s"] - programs["arrived_s"]).mean()) if len(programs) else 0.0
    return summary, tables.tool_timeseries


def _table(title: str, cells: list[CellSpec], workers: int) -> list[tuple[dict[str, Any], pd.DataFrame | None]]:
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            runs = list(pool.map(_run, cells))
    else:
        runs = [_run(cell) for cell in cells]
    results = [summary for summary, _ in runs]
    print(f"\n{title}\n")
    print("| tool policy | scheduler | parallel | disk cap | steps/min | programs done | peak disk | mean disk "
          "| env wait / program | program time | waited for disk | held for an env at the end |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for s in results:
        cap = s.get("disk_capacity_bytes")
        tools = s.get("tool_policy") is not None
        stalled = s.get("tool_host_stalled_at_s")
        print("| " + " | ".join([
            _label(s), s["policy"], str(s["parallel"]),
            f"{cap / GB:,.0f} GB" if cap else "-",
            f"{s['steps_per_min']:.1f}", str(s["programs_finished"]),
            f"{s['peak_disk_bytes'] / GB:,.0f} GB" if tools else "-",
            f"{s['mean_disk_bytes'] / GB:,.0f} GB" if tools else "-",
            f"{s['mean_env_wait_s']:.1f} s" if tools else "-",
            f"{s['mean_program_s']:.0f} s",
            str(s["programs_waiting_for_disk"]) if tools else "-",
            (str(s["programs_waiting_env_at_end"])
             + (f" (host out of disk for good from {stalled:,.0f} s)" if stalled is not None else ""))
            if tools else "-",
        ]) + " |", flush=True)
    return runs


def _label(summary: dict[str, Any]) -> str:
    options = summary.get("tool_options") or {}
    name = summary.get("tool_policy") or "none (not modelled)"
    return name + (" (" + ", ".join(f"{k} {v}" for k, v in options.items()) + ")" if options else "")


def _disk_plot(runs: list[tuple[dict[str, Any], pd.DataFrame | None]], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for summary, series in runs:
        if series is None or summary["policy"] != "thunder":
            continue
        ax.step(series["time_s"] / 60, series["disk_used_bytes"] / GB, where="post", label=summary["tool_policy"])
    ax.set_xlabel("time (min)")
    ax.set_ylabel("tool disk in use (GB)")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"\nwrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trace", default="traces/science.jsonl")
    parser.add_argument("--programs", type=int, default=400, help="programs in the synthetic trace")
    parser.add_argument("--seed", type=int, default=1, help="seed of the synthetic trace")
    parser.add_argument("--parallel", type=int, default=128)
    parser.add_argument("--horizon-s", type=float, default=7200.0)
    parser.add_argument("--disk-capacity-gb", type=float, default=2000.0)
    parser.add_argument("--preset", default="paper-8xh100-glm46")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--sweep", default="64,192", help="parallel values of table 4 (empty: skip it)")
    parser.add_argument("--lookaheads", default="4,64", help="program-aware lookahead values of table 5 "
                                                             "(empty: skip it)")
    parser.add_argument("--plot", default=None, help="write table 2's disk in use over time here (PNG)")
    args = parser.parse_args()

    def cells(trace: str, parallel: int, horizon_s: float | None, cap: float | None,
              policies: tuple[str | None, ...] = POLICIES, scheduler: str = "thunder",
              tool_options: tuple[tuple[str, Any], ...] = ()) -> list[CellSpec]:
        return [CellSpec(trace=trace, policy=scheduler, parallel=parallel, preset=args.preset, horizon_s=horizon_s,
                         tool_policy=p, disk_capacity_gb=cap if p else None,
                         tool_options=tool_options if p else ()) for p in policies]

    _table(f"{args.trace}, thunder, 48 parallel, to the end, {args.preset}",
           cells(args.trace, 48, None, None), args.workers)
    with tempfile.TemporaryDirectory() as folder:
        synthetic = str(Path(folder) / "science-large.jsonl")
        header, programs = synthesize("science", args.programs, args.seed)
        write_trace(synthetic, header, programs)
        name = f"synthetic science ({args.programs} programs, seed {args.seed})"
        title = f"{name}, {args.parallel} parallel, cycled for {args.horizon_s:.0f} s, {args.preset}"
        runs = _table(title, cells(synthetic, args.parallel, args.horizon_s, None)
                      + cells(synthetic, args.parallel, args.horizon_s, None, ("on-demand", "program-aware"), "vllm"),
                      args.workers)
        if args.plot:
            _disk_plot(runs, args.plot, f"tool disk in use: {name}, {args.parallel} parallel, thunder")
        _table(f"{name}, {args.parallel} parallel, {args.horizon_s:.0f} s, tool host of "
               f"{args.disk_capacity_gb:,.0f} GB",
               cells(synthetic, args.parallel, args.horizon_s, args.disk_capacity_gb, POLICIES[1:]), args.workers)
        sweep = [int(n) for n in args.sweep.split(",") if n.strip()]
        if sweep:
            _table(f"{name}, cycled for {args.horizon_s:.0f} s, other concurrencies",
                   [cell for n in sweep for cell in cells(synthetic, n, args.horizon_s, None,
                                                          (None, "on-demand", "program-aware"))],
                   args.workers)
        lookaheads = [int(n) for n in args.lookaheads.split(",") if n.strip()]
        if lookaheads:
            _table(f"{name}, {args.parallel} parallel, cycled for {args.horizon_s:.0f} s, program-aware lookahead",
                   [cell for n in lookaheads for cell in cells(
                       synthetic, args.parallel, args.horizon_s, None, ("program-aware",),
                       tool_options=(("lookahead", n), ("max_preparing", max(16, n))))],
                   args.workers)


if __name__ == "__main__":
    main()
