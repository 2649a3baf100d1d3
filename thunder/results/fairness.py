"""Who pays for a policy's throughput: hold times by context size, evictions per program.

A scheduler can raise steps/min by starving long programs or by evicting the
same small ones again and again. These numbers, from a run's tables
(``thunder.results.tables``), make that visible:

* hold time (``queue_s``: a ready request held at the proxy) at p50, p99 and max,
  and p99 per quartile of the step's prompt size, with the ratio of the largest
  quartile's p99 to the smallest's (each floored at 1 s);
* evictions (pauses) per program: the max, and the Gini coefficient of their
  distribution (0: spread evenly; near 1: concentrated on a few programs);
* output tokens per second and completed programs beside steps/min, because a
  fixed horizon's steps/min rewards deferring long programs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from thunder.results.tables import RunTables


HOLD_FLOOR_S = 1.0  # holds shorter than this count as this in the quartile ratio


def gini(values: np.ndarray) -> float:
    """Gini coefficient of non-negative values (0 when all are equal or all zero)."""
    values = np.sort(np.asarray(values, dtype=float))
    n = len(values)
    total = values.sum()
    if n == 0 or total == 0:
        return 0.0
    ranks = np.arange(1, n + 1)
    return float((2 * (ranks * values).sum()) / (n * total) - (n + 1) / n)


def hold_by_quartile(steps: pd.DataFrame) -> dict[str, float]:
    """p99 hold time per quartile of prompt size (q1 smallest), and q4 / q1."""
    if len(steps) < 4:
        return {}
    quartile = pd.qcut(steps["prompt_tokens"].rank(method="first"), 4, labels=["q1", "q2", "q3", "q4"])
    p99 = steps.groupby(quartile, observed=True)["queue_s"].quantile(0.99)
    out = {f"p99_hold_{q}_s": float(p99.get(q, 0.0)) for q in ("q1", "q2", "q3", "q4")}
    # Floored at one second: a ratio of two near-zero holds says nothing.
    out["p99_hold_q4_over_q1"] = max(out["p99_hold_q4_s"], HOLD_FLOOR_S) / max(out["p99_hold_q1_s"], HOLD_FLOOR_S)
    return out


def fairness_metrics(tables: RunTables, duration_s: float) -> dict[str, Any]:
    steps, programs = tables.steps, tables.programs
    out: dict[str, Any] = {}
    if len(steps):
        hold = steps["queue_s"].to_numpy(dtype=float)
        out.update(p50_hold_s=float(np.percentile(hold, 50)), p99_hold_s=float(np.percentile(hold, 99)),
                   max_hold_s=float(hold.max()))
        out.update(hold_by_quartile(steps))
        out["output_tokens_per_s"] = float(steps["output_tokens"].sum()) / duration_s if duration_s > 0 else 0.0
    if len(programs) and "pauses" in programs:
        pauses = programs["pauses"].to_numpy(dtype=float)
        out.update(evictions_max=int(pauses.max()), evictions_gini=gini(pauses))
    return out
