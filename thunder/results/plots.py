"""Plots of compare grids, in the spirit of the paper's Figures 1, 4 and 5."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from thunder.core.cost import COST_TERMS  # noqa: E402

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


def memory_balance_plot(runs: dict[str, pd.DataFrame], path: Path, title: str = "KV memory per replica",
                        threshold: float = 0.2) -> Path:
    """Per-replica KV use (share of capacity) and its max - min spread over time, one panel per
    run (the paper's Figure 2a). ``runs``: label -> timeseries table of that run."""
    fig, axes = plt.subplots(len(runs), 1, figsize=(7.0, 2.4 * len(runs)), sharex=True, squeeze=False)
    for ax, (label, frame) in zip(axes[:, 0], runs.items()):
        share = frame.assign(share=frame["running_tokens"] / frame["capacity_tokens"] * 100,
                             minute=frame["time_s"] / 60)
        for backend, rows in share.groupby("backend"):
            ax.plot(rows["minute"], rows["share"], lw=0.8, label=f"replica {backend}")
        spread = share.groupby("minute")["share"].agg(lambda s: s.max() - s.min())
        ax.plot(spread.index, spread.to_numpy(), lw=1.0, color="black", label="max - min")
        ax.axhline(threshold * 100, color="red", lw=0.6, ls="--")
        ax.set_ylim(0, 105)
        ax.set_ylabel("KV in use (%)")
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper right", ncol=3)
    axes[-1, 0].set_xlabel("time (min)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# Helpers for the notebooks: tables from run_grid summaries, and plots drawn on
# an Axes the caller owns (nothing saved or closed, so they show inline).

def options_frame(summaries: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """``run_grid`` summaries as a DataFrame, each policy option in a column of its own
    (NaN where a cell left the option at the policy's default)."""
    frame = pd.DataFrame(list(summaries))
    if frame.empty or "policy_options" not in frame:
        return frame
    options = pd.DataFrame([dict(o or {}) for o in frame["policy_options"]], index=frame.index)
    options = options.rename(columns={c: f"{c}_option" for c in options.columns if c in frame.columns})
    return pd.concat([frame, options], axis=1)


def with_ratio(results: pd.DataFrame, keys: Sequence[str], baseline: str = "vllm",
               value: str = "steps_per_min") -> pd.DataFrame:
    """Adds ``<value>_vs_<baseline>``: each row's ``value`` over the ``baseline`` policy's
    row with the same ``keys`` (e.g. parallel, tool_time_scale); NaN where there is none."""
    base = results[results["policy"] == baseline].drop_duplicates(list(keys)).set_index(list(keys))[value]
    index = pd.MultiIndex.from_frame(results[list(keys)]) if len(keys) > 1 else results[keys[0]]
    ratio = results[value].to_numpy() / base.reindex(index).to_numpy()
    return results.assign(**{f"{value}_vs_{baseline}": ratio})


def speedup_table(results: pd.DataFrame, baseline: str = "vllm", by: str = "parallel",
                  value: str = "steps_per_min") -> pd.DataFrame:
    """``value`` with one column per policy and one row per ``by``, then each policy over ``baseline``."""
    table = results.pivot_table(index=by, columns="policy", values=value, sort=False)
    ratios = table.div(table[baseline], axis=0).add_suffix(f" / {baseline}")
    return pd.concat([table, ratios], axis=1)


def lines_by(ax: Axes, results: pd.DataFrame, x: str, y: str, by: str = "policy", *,
             xlabel: str | None = None, ylabel: str | None = None, title: str | None = None,
             scale: float = 1.0, categorical: bool = False,
             xfmt: Callable[[Any], str] = lambda v: f"{v:g}") -> Axes:
    """One line of ``y`` (times ``scale``) against ``x`` per value of ``by``, in first-seen order.
    ``categorical`` spaces the x values evenly (labelled by ``xfmt``), for uneven sweeps."""
    positions = {v: i for i, v in enumerate(sorted(results[x].unique()))}
    for key, rows in results.groupby(by, sort=False):
        rows = rows.sort_values(x)
        xs = rows[x].map(positions) if categorical else rows[x]
        ax.plot(xs, rows[y] * scale, marker="o", label=str(key))
    if categorical:
        ax.set_xticks(list(positions.values()), [xfmt(v) for v in positions], fontsize=8)
    ax.set_xlabel(("parallel programs" if x == "parallel" else x) if xlabel is None else xlabel)
    ax.set_ylabel(y if ylabel is None else ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def cost_bars(ax: Axes, results: pd.DataFrame, label_columns: Sequence[str] = ("policy", "parallel"),
              title: str = "Space-time cost") -> Axes:
    """Stacked shares of KV space-time (Eq. 2-3 terms), one bar per row, labelled by ``label_columns``."""
    labels = ["\n".join(str(row[c]) for c in label_columns) for _, row in results.iterrows()]
    bottom = np.zeros(len(results))
    for term in COST_TERMS:
        values = results[f"cost_{term}"].to_numpy() * 100
        ax.bar(labels, values, bottom=bottom, label=term, color=COST_COLORS[term])
        bottom = bottom + values
    ax.set_ylabel("share of KV space-time (%)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.22))
    ax.tick_params(axis="x", labelsize=7)
    return ax


def thrashing_figure(results: pd.DataFrame) -> Figure:
    """The paper's Figure 1 from a compare grid (one row per policy x parallel): (a) each policy's
    throughput relative to its own at the lowest parallel level, (b) KV hit rate, (c) mean step
    latency relative to the lowest level (the re-prefill cost the paper puts at up to 7.14x)."""
    frame = results.sort_values("parallel")
    first = frame.groupby("policy", sort=False)[["steps_per_min", "mean_step_latency_s"]].transform("first")
    frame = frame.assign(rel_throughput=frame["steps_per_min"] / first["steps_per_min"],
                         rel_latency=frame["mean_step_latency_s"] / first["mean_step_latency_s"])
    fig, axes = plt.subplots(1, 3, figsize=(12.0, 3.6))
    low = int(frame["parallel"].min())
    lines_by(axes[0], frame, "parallel", "rel_throughput", ylabel=f"throughput / at {low} parallel",
             title="(a) throughput degradation")
    lines_by(axes[1], frame, "parallel", "kv_hit_rate", scale=100, ylabel="KV hit rate (%)",
             title="(b) KV cache thrashing")
    lines_by(axes[2], frame, "parallel", "rel_latency", ylabel=f"mean step latency / at {low} parallel",
             title="(c) step latency growth")
    axes[1].set_ylim(0, 105)
    fig.tight_layout()
    return fig


def decay_label(x: float) -> str:
    """Tick label for a decay base: x and the half-life ln 2 / ln x of f(t) = x^-t."""
    return "1\n(off)" if x == 1 else f"{x:g}\n(t½ {math.log(2) / math.log(x):.2g} s)"
