"""`benchmarks/fidelity.py` end to end on a small case against the real vLLM (CPU build).

The full benchmark takes about fifteen minutes; this runs its whole path (calibration,
live replays through `thunder serve`, simulations with the calibrated profiles, the
JSON and the markdown table) on four programs of three steps, one run per cell, and
checks that both sides produced comparable numbers. How close they are is the
benchmark's business: one short run on a shared two-core machine proves nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from vllm_fixture import VllmBackend, make_vllm_backend_fixture

vllm_backend = make_vllm_backend_fixture()
BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "fidelity.py"


@pytest.mark.vllm
def test_fidelity_harness_runs_end_to_end(vllm_backend: VllmBackend, tmp_path) -> None:
    out, doc = tmp_path / "fidelity.json", tmp_path / "fidelity.md"
    doc.write_text("# Fidelity\n\nProse kept as it is.\n")
    done = subprocess.run(
        [sys.executable, str(BENCHMARK), "--endpoints", vllm_backend.url, "--backends", "1", "--programs", "4",
         "--steps", "3", "--parallel", "2", "--policies", "vllm,thunder-paper", "--repeats", "1",
         "--calibration-repeats", "1", "--cell-timeout-s", "60", "--out", str(out), "--doc", str(doc)],
        capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert [(e["backends"], e["policy"], e["parallel"]) for e in result["comparison"]] == [
        (1, "vllm", 2), (1, "thunder-paper", 2)]
    for entry in result["comparison"]:
        for metric in ("steps_per_min", "kv_hit_rate", "mean_step_latency_s", "engine_s_per_request"):
            assert entry[metric]["sim"] > 0 and entry[metric]["live"] > 0, (metric, entry[metric])
    assert all(run["steps"] == 12 and run["failures"] == 0 for run in result["live"])
    assert [c["engines"] for c in result["calibrations"]] == [1, 1]  # before the one round, and after it
    assert result["calibrations"][0]["admit_full_prompt"] is True
    assert result["calibrations"][0]["frontend_s"] > 0
    text = doc.read_text()
    assert text.startswith("# Fidelity\n\nProse kept as it is.\n")
    assert "| 1 | vllm | 2 |" in text and "| 1 | thunder-paper | 2 |" in text
    assert result["calibrations"][0]["step_time"]["per_admitting_step_s"] >= 0  # fitted to vLLM's engine time
    assert all("steady_steps_per_min" in run for run in result["live"] + result["sim"])

    # The simulated side again from the stored profiles, no vLLM needed: the same numbers.
    again = subprocess.run([sys.executable, str(BENCHMARK), "--resimulate", "--out", str(out), "--doc", str(doc)],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-3000:]
    redone = json.loads(out.read_text())
    assert [r["steps_per_min"] for r in redone["sim"]] == [r["steps_per_min"] for r in result["sim"]]
    assert redone["live"] == result["live"]
