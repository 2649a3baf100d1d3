"""Folding a sweep's per-seed results into one row per grid point.

A seed shuffles the order in which the trace's programs start (see
``CellSpec.seed``), so seeds show how much a number depends on which
programs happen to run together. The mean over seeds is what tables and
plots show; ``steps_per_min_std`` (sample standard deviation) and
``seeds`` say how far to trust it.
"""

from __future__ import annotations

import pandas as pd

GRID_KEYS = ("trace", "policy", "parallel")


def mean_over_seeds(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (trace, policy, parallel), numeric columns averaged over seeds."""
    keys = [k for k in GRID_KEYS if k in frame.columns]
    numeric = [c for c in frame.select_dtypes("number").columns if c not in keys and c != "seed"]
    grouped = frame.groupby(keys, sort=False)
    mean = grouped[numeric].mean()
    mean["steps_per_min_std"] = grouped["steps_per_min"].std()
    mean["seeds"] = grouped.size()
    return mean.reset_index()
