"""RL rollout metrics: one batch of programs that start together and all finish.

An RL rollout step launches N agent programs at once and waits for the last
one before the next training step, so what counts is the batch's makespan,
not steady-state throughput (the ThunderAgent paper, section 5.3 and Table 2).
From the run tables (``thunder.results.tables``) this module reports:

* ``makespan_s``: first arrival to the last program's end; ``batch_steps_per_min``
  = agent steps over the makespan (the paper's throughput for Table 2);
* memory imbalance over time (max - min share of KV capacity in use across
  replicas, per sample, the paper's Figure 2a): ``imbalance_peak``,
  ``imbalance_mean`` and ``imbalance_above_s``, the time it stayed above
  ``threshold`` (20%: the paper reports >20% for 37 of 90 minutes, peak 51%);
* the straggler tail: time from the end of the program at the 90th percentile
  (rank ceil(0.9 N) by finish time) to the end of the last one.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from thunder.results.tables import RunTables, memory_imbalance

IMBALANCE_THRESHOLD = 0.2


def time_above(series: pd.Series, threshold: float) -> float:
    """Seconds a sampled series (index: sample time) spent above ``threshold``;
    each sample holds until the next one."""
    if len(series) < 2:
        return 0.0
    ordered = series.sort_index()
    times = ordered.index.to_numpy(dtype=float)
    held_s = times[1:] - times[:-1]
    return float(held_s[ordered.to_numpy()[:-1] > threshold].sum())


def straggler_tail_s(finished_s: pd.Series, quantile: float = 0.9) -> float:
    """Last finish minus the finish of the program at rank ceil(quantile * N)."""
    ends = sorted(float(t) for t in finished_s.dropna())
    if not ends:
        return 0.0
    rank = max(1, math.ceil(quantile * len(ends)))
    return ends[-1] - ends[rank - 1]


def rollout_metrics(tables: RunTables, threshold: float = IMBALANCE_THRESHOLD) -> dict[str, Any]:
    """The rollout numbers of one run (see the module docstring)."""
    programs = tables.programs
    steps = len(tables.steps)
    if programs.empty:
        start_s = end_s = 0.0
    else:
        start_s, end_s = float(programs["arrived_s"].min()), float(programs["finished_s"].max())
    makespan_s = end_s - start_s
    imbalance = memory_imbalance(tables.timeseries)
    finished = programs["finished_s"] if not programs.empty else pd.Series(dtype=float)
    return {
        "rollout_programs": len(programs),
        "makespan_s": makespan_s,
        "batch_steps_per_min": steps / makespan_s * 60.0 if makespan_s > 0 else 0.0,
        "median_finish_s": float(finished.median()) if len(finished) else 0.0,
        "straggler_tail_s": straggler_tail_s(finished),
        "imbalance_peak": float(imbalance.max()) if len(imbalance) else 0.0,
        "imbalance_mean": float(imbalance.mean()) if len(imbalance) else 0.0,
        "imbalance_above_s": time_above(imbalance, threshold),
        "imbalance_threshold": threshold,
        **group_metrics(programs),
    }


def group_metrics(programs: pd.DataFrame) -> dict[str, Any]:
    """Per rollout group (``group_id``): makespan, from the group's first program start
    to its last program's end, and the straggler wait, from its first program's end to
    its last's (what a GRPO update waits for). Empty without groups."""
    if programs.empty or "group_id" not in programs or programs["group_id"].isna().all():
        return {}
    grouped = programs.dropna(subset=["group_id"]).groupby("group_id")
    start = grouped["started_s"].min().fillna(grouped["arrived_s"].min())
    makespan = grouped["finished_s"].max() - start
    wait = grouped["finished_s"].max() - grouped["finished_s"].min()
    return {
        "groups": int(len(makespan)),
        "group_makespan_mean_s": float(makespan.mean()),
        "group_makespan_p50_s": float(makespan.median()),
        "group_makespan_max_s": float(makespan.max()),
        "group_straggler_wait_mean_s": float(wait.mean()),
        "group_straggler_wait_max_s": float(wait.max()),
    }


def format_rollout(summary: dict[str, Any]) -> str:
    """The rollout lines of the terminal summary."""
    makespan = summary["makespan_s"]
    above = summary["imbalance_above_s"]
    share = above / makespan if makespan > 0 else 0.0
    lines = [
        f"  rollout         {summary['rollout_programs']} programs, makespan {makespan:.0f} s "
        f"({makespan / 60:.1f} min), {summary['batch_steps_per_min']:.1f} steps/min over the batch",
        f"  stragglers      median program done at {summary['median_finish_s']:.0f} s; "
        f"90th percentile to last: {summary['straggler_tail_s']:.0f} s",
        f"  imbalance       peak {summary['imbalance_peak']:.3f}  mean {summary['imbalance_mean']:.3f}  "
        f"above {summary['imbalance_threshold']:.0%} for {above:.0f} s ({share:.0%} of the makespan)",
    ]
    if "groups" in summary:
        lines.append(f"  groups          {summary['groups']}: makespan mean {summary['group_makespan_mean_s']:.0f} s, "
                     f"max {summary['group_makespan_max_s']:.0f} s; straggler wait mean "
                     f"{summary['group_straggler_wait_mean_s']:.0f} s, max {summary['group_straggler_wait_max_s']:.0f} s")
    return "\n".join(lines)
