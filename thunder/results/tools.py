"""Tool-environment results: two tables and the summary fields (paper, sections 3.3 and 4.4).

Tables (present only when environments were modelled):
* ``environments``: one row per environment instance (a program's env
  prepared again after a teardown is a second one): program_id, instance,
  disk_bytes, ports, setup_s, ahead (asked for before the program needed
  it), requested_s, started_s (disk taken), ready_s, reclaimed_s (empty if
  never torn down), reclaim_reason (released | idle | make-room), wait_s
  (seconds the program was held for it), blocked_on (disk | ports if it
  ever waited for room).
* ``tool_timeseries``: one row per change on the tool host: time_s,
  disk_used_bytes, disk_pending_bytes, disk_capacity_bytes, ports_used,
  envs_pending, envs_preparing, envs_ready, programs_waiting_env. A step
  function: each row holds until the next.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

GB = 1e9


def time_weighted_mean(series: pd.DataFrame, column: str, end_s: float) -> float:
    """Mean of a step function sampled on change, over [first sample, end_s]."""
    if series.empty:
        return 0.0
    times = series["time_s"].to_numpy(dtype=float)
    values = series[column].to_numpy(dtype=float)
    spans = np.diff(np.append(times, max(end_s, times[-1])))
    total = spans.sum()
    return float((values * spans).sum() / total) if total > 0 else float(values[-1])


def tool_summary(environments: pd.DataFrame, series: pd.DataFrame, decisions: pd.DataFrame,
                 duration_s: float) -> dict[str, Any]:
    """Peak and mean disk, environment waits, who waited for room; flat, for the run summary."""
    envs = environments
    has = not envs.empty
    wait = envs.groupby("program_id")["wait_s"].sum() if has else pd.Series(dtype=float)

    def waited_for(resource: str) -> int:
        if not has:
            return 0
        rows = envs[(envs["blocked_on"] == resource) & (envs["wait_s"] > 0)]
        return int(rows["program_id"].nunique())

    refused = int((decisions["action"] == "env_refuse_reclaim").sum()) if not decisions.empty else 0
    capacity = series["disk_capacity_bytes"].iloc[0] if not series.empty else None
    return {
        "peak_disk_bytes": int(series["disk_used_bytes"].max()) if not series.empty else 0,
        "mean_disk_bytes": time_weighted_mean(series, "disk_used_bytes", duration_s),
        "disk_capacity_bytes": None if capacity is None or pd.isna(capacity) else int(capacity),
        "peak_ports": int(series["ports_used"].max()) if not series.empty else 0,
        "envs_created": int(envs["started_s"].notna().sum()) if has else 0,  # took disk
        "envs_prepared_ahead": int((envs["ahead"] & envs["started_s"].notna()).sum()) if has else 0,
        "envs_reclaimed": int((envs["reclaimed_s"].notna() & envs["started_s"].notna()).sum()) if has else 0,
        "envs_unreclaimed": int((envs["reclaimed_s"].isna() & envs["started_s"].notna()).sum()) if has else 0,
        "mean_env_wait_s": float(wait.mean()) if len(wait) else 0.0,
        "max_env_wait_s": float(wait.max()) if len(wait) else 0.0,
        "programs_waiting_for_disk": waited_for("disk"),
        "programs_waiting_for_ports": waited_for("ports"),
        "env_reclaims_refused": refused,
    }


def format_tool_lines(summary: dict[str, Any]) -> list[str]:
    """Terminal lines for the tool host; none if environments were not modelled."""
    if "peak_disk_bytes" not in summary:
        return []
    cap = summary.get("disk_capacity_bytes")
    cap_text = f" of {cap / GB:,.0f} GB" if cap else ""
    lines = [
        f"  tool envs       {summary.get('tool_policy', '?')}: peak disk {summary['peak_disk_bytes'] / GB:,.0f} GB"
        f"{cap_text} (mean {summary['mean_disk_bytes'] / GB:,.0f} GB)  envs created {summary['envs_created']} "
        f"({summary['envs_prepared_ahead']} ahead, {summary['envs_reclaimed']} reclaimed)",
        f"  env wait        mean {summary['mean_env_wait_s']:.1f} s  max {summary['max_env_wait_s']:.1f} s "
        "per program (held until its environment was ready)",
    ]
    waiting = summary["programs_waiting_for_disk"] + summary["programs_waiting_for_ports"]
    stalled = summary.get("tool_host_stalled_at_s")
    if waiting or stalled is not None:
        text = (f"  out of room     {summary['programs_waiting_for_disk']} programs waited for disk, "
                f"{summary['programs_waiting_for_ports']} for ports")
        if stalled is not None:
            text += (f"; the host ran out for good at t={stalled:.0f} s and the run stopped with "
                     f"{summary.get('programs_unfinished', '?')} programs unfinished")
        lines.append(text)
    return lines
