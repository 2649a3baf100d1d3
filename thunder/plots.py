"""Plots of compare grids, in the spirit of the paper's Figures 1, 4 and 5."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from thunder.cost import COST_TERMS  # noqa: E402

COST_COLORS = {"decode": "#2b8cbe", "prefill": "#7bccc4", "recompute": "#e34a33",
               "caching": "#fdbb84", "unused": "#bdbdbd"}


def _by_policy(results: pd.DataFrame, column: str, ylabel: str, title: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for policy, rows in results.groupby("policy", sort=False):
        rows = rows.sort_values("parallel")
        ax.plot(rows["parallel"], rows[column], marker="o", label=policy)
    ax.set_xlabel("parallel programs")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def throughput_plot(results: pd.DataFrame, path: Path, title: str = "Throughput") -> Path:
    return _by_policy(results, "steps_per_min", "agent steps / min", title, path)


def hit_rate_plot(results: pd.DataFrame, path: Path, title: str = "KV cache hit rate") -> Path:
    frame = results.assign(kv_hit_pct=results["kv_hit_rate"] * 100)
    return _by_policy(frame, "kv_hit_pct", "KV hit rate (%)", title, path)


def cost_breakdown_plot(results: pd.DataFrame, path: Path, title: str = "Space-time cost") -> Path:
    frame = results.sort_values(["parallel", "policy"])
    labels = [f"{p}\n{n}" for p, n in zip(frame["policy"], frame["parallel"])]
    fig, ax = plt.subplots(figsize=(max(5.5, 0.6 * len(frame)), 4.0))
    bottom = pd.Series(0.0, index=frame.index)
    for term in COST_TERMS:
        values = frame[f"cost_{term}"] * 100
        ax.bar(labels, values, bottom=bottom, label=term, color=COST_COLORS[term])
        bottom = bottom + values
    ax.set_ylabel("share of KV space-time (%)")
    ax.set_title(title)
    ax.legend(fontsize=8, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.25))
    ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
