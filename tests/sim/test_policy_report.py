"""benchmarks/policy_report.py end to end in its small mode (seconds)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_policy_report_small_mode_writes_both_bounds_and_every_column(tmp_path):
    out = tmp_path / "report"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "policy_report.py"), "--small", "--workers", "1",
                           "--out", str(out)], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr
    text = out.with_suffix(".md").read_text()
    for heading in ("of bound", "of fit bound", "p99 q4/q1", "evict Gini", "group makespan mean s"):
        assert heading in text
    report = json.loads(out.with_suffix(".json").read_text())
    assert set(report["rows"]) == {"routing", "rollout"}
    for row in report["rows"]["routing"]:
        assert row["of_bound"] == row["steps_per_min"] / row["bound_steps_per_min"]
        assert 1 <= row["fit_parallel"] <= row["parallel"]
    rollout = {row["policy"]: row for row in report["rows"]["rollout"]}
    assert set(rollout) == {"vllm", "thunder-paper", "thunder"}
    for row in rollout.values():
        assert row["groups"] == 4 and row["rollout_programs"] == 16
        assert row["of_bound"] <= 1.0 + 1e-9  # nothing beats the same batch with KV unbounded


def test_fairness_numbers_on_a_hand_made_table():
    import pandas as pd

    from thunder.results.fairness import fairness_metrics, gini
    from thunder.results.tables import RunTables

    assert gini([0, 0, 0]) == 0.0 and gini([1, 1, 1, 1]) == 0.0
    assert abs(gini([0, 0, 0, 4]) - 0.75) < 1e-12  # all on one of four
    steps = pd.DataFrame({"prompt_tokens": [10, 20, 30, 40, 50, 60, 70, 80],
                          "queue_s": [0.0, 0.5, 0.0, 0.0, 0.0, 0.0, 9.0, 12.0],
                          "output_tokens": [10] * 8})
    programs = pd.DataFrame({"pauses": [0, 0, 3, 1]})
    tables = RunTables(steps=steps, programs=programs, timeseries=pd.DataFrame(), decisions=pd.DataFrame())
    found = fairness_metrics(tables, duration_s=8.0)
    assert found["max_hold_s"] == 12.0 and found["output_tokens_per_s"] == 10.0
    assert found["p99_hold_q1_s"] < 1.0 and 11.0 < found["p99_hold_q4_s"] <= 12.0
    assert found["p99_hold_q4_over_q1"] == found["p99_hold_q4_s"]  # q1 floored at 1 s
    assert found["evictions_max"] == 3 and abs(found["evictions_gini"] - gini([0, 0, 3, 1])) < 1e-12
