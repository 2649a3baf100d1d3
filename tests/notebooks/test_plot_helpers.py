"""The table and axes helpers the notebooks use (thunder.results.plots)."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from thunder.results.plots import (cost_bars, decay_label, lines_by, options_frame, speedup_table, thrashing_figure,
                           with_ratio)


def _summary(policy, parallel, spm, **extra):
    row = {"policy": policy, "parallel": parallel, "steps_per_min": spm, "kv_hit_rate": 0.5,
           "mean_step_latency_s": spm / 10, "policy_options": extra.pop("options", {}),
           "cost_decode": 0.7, "cost_prefill": 0.05, "cost_recompute": 0.05, "cost_caching": 0.1,
           "cost_unused": 0.1}
    row.update(extra)
    return row


def test_options_frame_spreads_policy_options_into_columns():
    frame = options_frame([_summary("vllm", 8, 10.0),
                           _summary("thunder", 8, 12.0, options={"decay_base": 1.0, "interval_s": 5.0})])
    assert math.isnan(frame.loc[0, "decay_base"])
    assert frame.loc[1, "decay_base"] == 1.0 and frame.loc[1, "interval_s"] == 5.0


def test_options_frame_keeps_a_clashing_option_apart():
    frame = options_frame([_summary("thunder", 8, 12.0, options={"parallel": 3})])
    assert frame.loc[0, "parallel"] == 8 and frame.loc[0, "parallel_option"] == 3


def test_with_ratio_matches_baseline_on_keys():
    frame = pd.DataFrame([_summary("vllm", 8, 10.0), _summary("vllm", 16, 20.0),
                          _summary("thunder", 8, 15.0), _summary("thunder", 16, 30.0),
                          _summary("thunder", 32, 30.0)])
    ratio = with_ratio(frame, ["parallel"])["steps_per_min_vs_vllm"].tolist()
    assert ratio[:4] == [1.0, 1.0, 1.5, 1.5] and math.isnan(ratio[4])


def test_with_ratio_on_two_keys():
    frame = pd.DataFrame([_summary("vllm", 8, 10.0, tool_time_scale=1.0),
                          _summary("vllm", 8, 5.0, tool_time_scale=4.0),
                          _summary("thunder", 8, 10.0, tool_time_scale=4.0)])
    assert with_ratio(frame, ["parallel", "tool_time_scale"])["steps_per_min_vs_vllm"].iloc[2] == 2.0


def test_speedup_table():
    frame = pd.DataFrame([_summary("vllm", 8, 10.0), _summary("thunder", 8, 14.0)])
    table = speedup_table(frame)
    assert table.loc[8, "thunder"] == 14.0 and table.loc[8, "thunder / vllm"] == pytest.approx(1.4)


def test_decay_label():
    assert "off" in decay_label(1.0)
    assert decay_label(2.0).startswith("2\n") and "1 s" in decay_label(2.0)


def test_axes_helpers_draw():
    frame = pd.DataFrame([_summary(p, n, float(n)) for p in ("vllm", "thunder") for n in (8, 16, 32)])
    fig, (a, b) = plt.subplots(1, 2)
    lines_by(a, frame, "parallel", "steps_per_min", categorical=True, xlabel="")
    assert len(a.get_lines()) == 2 and a.get_xlabel() == ""
    assert [t.get_text() for t in a.get_xticklabels()] == ["8", "16", "32"]
    cost_bars(b, frame)
    assert len(b.patches) == 5 * len(frame)
    plt.close(fig)
    fig = thrashing_figure(frame)
    assert len(fig.axes) == 3
    plt.close(fig)
