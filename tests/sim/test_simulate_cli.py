"""`thunder simulate` and `thunder compare` through typer's runner."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from thunder.cli import app

REPO = Path(__file__).resolve().parents[2]
ROUTING = str(REPO / "traces" / "routing.jsonl")
runner = CliRunner()


def test_simulate_prints_the_summary_and_writes_tables(tmp_path):
    result = runner.invoke(app, ["simulate", "--trace", ROUTING, "--policy", "thunder-paper", "--parallel", "8",
                                 "--preset", "h100-llama8b", "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "steps/min" in result.output and "KV hit rate" in result.output
    steps = pd.read_csv(tmp_path / "steps.csv")
    assert {"program_id", "step", "prompt_tokens", "cached_tokens", "queue_s", "latency_s"} <= set(steps.columns)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["steps"] == len(steps) == 646
    assert set(pd.read_csv(tmp_path / "timeseries.csv").columns) >= {"time_s", "backend", "running_tokens"}


def test_simulate_json_is_deterministic():
    args = ["simulate", "--trace", ROUTING, "--policy", "vllm", "--parallel", "16", "--replicas", "2",
            "--preset", "h100-llama8b", "--json"]
    first, second = runner.invoke(app, args), runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert json.loads(first.output) == json.loads(second.output)


def test_simulate_rejects_unknown_policy_option_and_preset():
    bad_option = runner.invoke(app, ["simulate", "--trace", ROUTING, "--policy", "thunder-paper", "-O", "nope=1",
                                     "--quiet"])
    assert bad_option.exit_code == 2
    assert "nope" in bad_option.output
    bad_preset = runner.invoke(app, ["simulate", "--trace", ROUTING, "--preset", "h200-imaginary", "--quiet"])
    assert bad_preset.exit_code == 2
    assert "unknown preset" in bad_preset.output


def test_simulate_reports_a_bad_trace_with_its_line(tmp_path):
    trace = tmp_path / "bad.jsonl"
    trace.write_text('{"type":"header","format_version":1}\n{"program_id":"a","workflow":"w","steps":[]}\n')
    result = runner.invoke(app, ["simulate", "--trace", str(trace), "--quiet"])
    assert result.exit_code == 2
    assert "bad.jsonl:2: steps" in result.output


def test_compare_writes_results_and_plots(tmp_path):
    result = runner.invoke(app, ["compare", "--trace", ROUTING, "--policies", "vllm,thunder", "--parallel",
                                 "4,8", "--preset", "h100-llama8b", "--workers", "1", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(tmp_path / "results.csv")
    assert sorted(zip(frame["policy"], frame["parallel"])) == [("thunder", 4), ("thunder", 8), ("vllm", 4),
                                                               ("vllm", 8)]
    # each cell's share of the unbounded-KV run at the same parallelism, which is also written
    bound = pd.read_csv(tmp_path / "bound.csv")
    assert sorted(bound["parallel"]) == [4, 8] and bound["unbounded_kv"].all()
    assert (frame["of_bound"] == frame["steps_per_min"] / frame["bound_steps_per_min"]).all()
    assert (frame["of_bound"] <= 1.0 + 1e-9).all()
    assert "of_bound" in result.output
    for name in ("throughput.png", "hit_rate.png", "cost_breakdown.png"):
        assert (tmp_path / name).stat().st_size > 1000
