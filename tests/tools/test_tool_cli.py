"""`thunder simulate --tool-policy/--disk-capacity-gb` through typer's runner."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from thunder.cli import app

SCIENCE = str(Path(__file__).resolve().parents[2] / "traces" / "science.jsonl")
runner = CliRunner()
BASE = ["simulate", "--trace", SCIENCE, "--policy", "thunder-paper", "--parallel", "16", "--preset", "h100-llama8b"]


def test_simulate_models_tool_environments_and_writes_their_tables(tmp_path):
    result = runner.invoke(app, [*BASE, "--tool-policy", "program-aware", "--disk-capacity-gb", "400",
                                 "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "tool envs       program-aware: peak disk" in result.output and "of 400 GB" in result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["tool_policy"] == "program-aware" and summary["disk_capacity_bytes"] == 400 * 10**9
    assert 0 < summary["peak_disk_bytes"] <= 400 * 10**9
    assert summary["envs_created"] == summary["envs_reclaimed"] == 64
    envs = pd.read_csv(tmp_path / "environments.csv")
    assert {"program_id", "disk_bytes", "setup_s", "ready_s", "reclaimed_s", "wait_s"} <= set(envs.columns)
    series = pd.read_csv(tmp_path / "tool_timeseries.csv")
    assert series["disk_used_bytes"].max() == summary["peak_disk_bytes"]


def test_simulate_without_a_tool_policy_reports_no_tool_fields():
    result = runner.invoke(app, [*BASE, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert "peak_disk_bytes" not in summary and "tool_policy" not in summary


def test_simulate_rejects_an_unknown_tool_policy_and_a_cap_without_one():
    unknown = runner.invoke(app, [*BASE, "--tool-policy", "gc", "--quiet"])
    assert unknown.exit_code == 2 and "unknown tool policy 'gc'" in unknown.output
    orphan = runner.invoke(app, [*BASE, "--disk-capacity-gb", "100", "--quiet"])
    assert orphan.exit_code == 2 and "--disk-capacity-gb needs --tool-policy" in orphan.output
