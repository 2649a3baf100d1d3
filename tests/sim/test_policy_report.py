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
