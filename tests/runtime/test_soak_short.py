"""The soak benchmark's short version (300 programs in 30 s, idle timeout 5 s):
no lost request, every turn counted by the proxy, no program idle past the
timeout, an empty table at the end, flat memory and descriptors. The full run
is a documented command (docs/reliability.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SOAK = Path(__file__).resolve().parents[2] / "benchmarks" / "soak.py"


@pytest.mark.slow
def test_short_soak(tmp_path):
    out = tmp_path / "soak.json"
    run = subprocess.run([sys.executable, str(SOAK), "--programs", "300", "--duration-s", "30",
                          "--idle-timeout-s", "5", "--sample-s", "3", "--tool-s", "0.5", "--out", str(out)],
                         capture_output=True, text=True, timeout=240)
    assert out.exists(), run.stderr[-3000:]
    result = json.loads(out.read_text())
    summary = result["summary"]
    assert run.returncode == 0, (result["checks"], summary)
    assert summary["programs_done"] == 300 and summary["lost"] == 0 and summary["programs_left"] == 0
    assert summary["hung_up"] > 0 and summary["reclaimed"] > 0  # both bad clients were exercised
    proxy = summary["proxy_outcomes"]
    assert proxy["ok"] + proxy["aborted"] == summary["turns_sent"] and proxy["aborted"] > 0
