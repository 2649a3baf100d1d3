"""Results as tables, a summary, and plots; the same columns for sim and live runs.

Tables (one row per ...):
* ``steps``: LLM call: program_id, step, backend, ready_s, dispatched_s,
  admitted_s, first_token_s, done_s, prompt_tokens, cached_tokens,
  recompute_tokens, output_tokens, preemptions, tool, tool_s, plus derived
  queue_s (held at the proxy), engine_wait_s, prefill_s, decode_s, latency_s.
* ``programs``: program: arrival, start, finish, steps, pauses, restores,
  migrations, queue_s.
* ``timeseries``: backend x sample time: capacity, running, cached and
  program tokens, requests, queued programs.
* ``decisions``: time, action, program, backend, reason.
* ``environments`` and ``tool_timeseries``: only where tool environments
  were modelled; see ``thunder.results.tools``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from thunder.core.cost import COST_TERMS, CostLedger
from thunder.core.records import DECISION_COLUMNS
from thunder.results.tools import format_tool_lines, tool_summary


@dataclass(frozen=True, slots=True)
class RunTables:
    steps: pd.DataFrame
    programs: pd.DataFrame
    timeseries: pd.DataFrame
    decisions: pd.DataFrame
    environments: pd.DataFrame | None = None  # None: tool environments not modelled
    tool_timeseries: pd.DataFrame | None = None


def build_tables(steps: list[dict[str, Any]], programs: list[dict[str, Any]],
                 timeseries: list[dict[str, Any]], decisions: Iterable[tuple],
                 environments: list[dict[str, Any]] | None = None,
                 tool_timeseries: list[dict[str, Any]] | None = None) -> RunTables:
    step_df = pd.DataFrame(steps)
    if not step_df.empty:
        step_df["queue_s"] = step_df["dispatched_s"] - step_df["ready_s"]
        step_df["engine_wait_s"] = step_df["admitted_s"] - step_df["dispatched_s"]
        step_df["prefill_s"] = step_df["first_token_s"] - step_df["admitted_s"]
        step_df["decode_s"] = step_df["done_s"] - step_df["first_token_s"]
        step_df["latency_s"] = step_df["done_s"] - step_df["ready_s"]
    decision_df = pd.DataFrame(list(decisions), columns=list(DECISION_COLUMNS))
    tools = {} if environments is None else {
        "environments": pd.DataFrame(environments), "tool_timeseries": pd.DataFrame(tool_timeseries or [])}
    return RunTables(step_df, pd.DataFrame(programs), pd.DataFrame(timeseries), decision_df, **tools)


def memory_imbalance(timeseries: pd.DataFrame, column: str = "running_tokens") -> pd.Series:
    """Per sample time: max minus min share of capacity across backends."""
    if timeseries.empty or timeseries["backend"].nunique() < 2:
        return pd.Series(dtype=float)
    share = timeseries[column] / timeseries["capacity_tokens"]
    frame = timeseries.assign(share=share)
    grouped = frame.groupby("time_s")["share"]
    return grouped.max() - grouped.min()


def _total(frame: pd.DataFrame, column: str) -> float:
    """Sum of a column that a live run may leave empty (unknown there)."""
    if frame.empty or column not in frame:
        return 0.0
    return float(pd.to_numeric(frame[column], errors="coerce").fillna(0).sum())


def summarize(tables: RunTables, ledger: CostLedger | None, duration_s: float, **context: Any) -> dict[str, Any]:
    """The numbers every run reports (see the design map): one flat dict.
    ``ledger`` is None where the space-time split cannot be observed (live runs)."""
    steps = tables.steps
    n_steps = len(steps)
    prompt = float(steps["prompt_tokens"].sum()) if n_steps else 0.0
    cached = float(steps["cached_tokens"].sum()) if n_steps else 0.0
    latency = steps["latency_s"].to_numpy() if n_steps else np.array([])
    actions: Any = tables.decisions["action"].value_counts() if not tables.decisions.empty else {}
    imbalance = memory_imbalance(tables.timeseries)
    summary: dict[str, Any] = dict(context)
    summary.update({
        "programs_finished": len(tables.programs),
        "steps": n_steps,
        "duration_s": duration_s,
        "steps_per_min": n_steps / duration_s * 60.0 if duration_s > 0 else 0.0,
        "kv_hit_rate": cached / prompt if prompt else 0.0,
        "recompute_tokens": int(_total(steps, "recompute_tokens")),
        "pauses": int(actions.get("pause", 0)),
        "restores": int(actions.get("restore", 0)),
        "migrations": int(actions.get("migrate", 0)),
        "preemptions": int(_total(steps, "preemptions")),
        "mean_step_latency_s": float(latency.mean()) if n_steps else 0.0,
        "p95_step_latency_s": float(np.percentile(latency, 95)) if n_steps else 0.0,
        "mean_queue_s": float(steps["queue_s"].mean()) if n_steps else 0.0,
        "max_queue_s": float(steps["queue_s"].max()) if n_steps else 0.0,
        "imbalance_mean": float(imbalance.mean()) if len(imbalance) else 0.0,
        "imbalance_peak": float(imbalance.max()) if len(imbalance) else 0.0,
    })
    if ledger is not None:
        for term, share in ledger.shares().items():
            summary[f"cost_{term}"] = share
    if tables.environments is not None and tables.tool_timeseries is not None:
        summary.update(tool_summary(tables.environments, tables.tool_timeseries, tables.decisions, duration_s))
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """A human-readable block for the terminal."""
    lines = [
        f"policy {summary.get('policy', '?')}  parallel {summary.get('parallel', '?')}  "
        f"replicas {summary.get('replicas', '?')}  preset {summary.get('preset', '?')}",
        f"  throughput      {summary['steps_per_min']:.1f} steps/min "
        f"({summary['steps']} steps, {summary['programs_finished']} programs, "
        f"{summary['duration_s']:.0f} s simulated)",
        f"  KV hit rate     {summary['kv_hit_rate']:.3f} (cached prompt tokens / prompt tokens)",
        ("  cost (STP)      " + "  ".join(f"{t} {summary[f'cost_{t}']:.1%}" for t in COST_TERMS)
         if "cost_decode" in summary else "  cost (STP)      not observable in this run"),
        f"  scheduling      pauses {summary['pauses']}  restores {summary['restores']}  "
        f"migrations {summary['migrations']}  preemptions {summary['preemptions']}",
        f"  step latency    mean {summary['mean_step_latency_s']:.2f} s  p95 {summary['p95_step_latency_s']:.2f} s  "
        f"(held at proxy: mean {summary['mean_queue_s']:.2f} s, max {summary['max_queue_s']:.2f} s)",
        f"  imbalance       mean {summary['imbalance_mean']:.3f}  peak {summary['imbalance_peak']:.3f} "
        "(max - min share of KV in use across replicas)",
    ]
    lines.extend(format_tool_lines(summary))
    if summary.get("steps_without_tool_time"):
        lines.append(f"  note            {summary['steps_without_tool_time']} steps had no tool time in the "
                     "trace (default tool time used)")
    return "\n".join(lines)


def write_tables(tables: RunTables, out_dir: Path, summary: dict[str, Any], fmt: str = "csv") -> list[Path]:
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"unknown table format {fmt!r}: use csv or parquet")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    tool_tables = tuple(n for n in ("environments", "tool_timeseries") if getattr(tables, n) is not None)
    for name in ("steps", "programs", "timeseries", "decisions", *tool_tables):
        frame: pd.DataFrame = getattr(tables, name)
        path = out_dir / f"{name}.{ 'parquet' if fmt == 'parquet' else 'csv'}"
        if fmt == "parquet":
            frame.to_parquet(path, index=False)
        else:
            frame.to_csv(path, index=False)
        written.append(path)
    summary_path = out_dir / "summary.json"
    summary_path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    written.append(summary_path)
    return written
