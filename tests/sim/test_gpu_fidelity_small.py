"""benchmarks/gpu_fidelity.py --small end to end (the committed fixtures; a few seconds)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import gpu_fidelity  # noqa: E402


def test_small_mode_end_to_end(tmp_path: Path, capsys) -> None:
    out = tmp_path / "gpu.json"
    results = gpu_fidelity.main(["--small", "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    printed = capsys.readouterr().out
    assert "| TPOT p50, ms |" in printed and "fitted on bs1:" in printed
    assert [b["name"] for b in results["batches"]] == ["bs1", "bs32"]
    bs1, bs32 = results["batches"]
    assert (bs1["runs"], bs1["real"]["steps"], bs32["runs"], bs32["real"]["steps"]) == (2, 57, 3, 84)
    for batch in results["batches"]:
        assert set(batch["sim"]) == {"datasheet", "fitted here", "8xh200-glm45", "fitted here, inferred tokens"}
        for metrics in batch["sim"].values():
            assert metrics["steps"] == batch["real"]["steps"]  # every recorded call replayed
    fit = results["fit"]
    assert fit["on"] == "bs1" and fit["coefficients"]["overhead_s"] > 0
    # the datasheet roofline alone is far too fast at one worker; the fit is close on the median
    real, sim = bs1["real"]["tpot_s"]["p50"], bs1["sim"]
    assert sim["datasheet"]["tpot_s"]["p50"] < 0.5 * real
    assert abs(sim["fitted here"]["tpot_s"]["p50"] - real) < 0.25 * real


def test_missing_runs_folder_is_a_clear_error(tmp_path: Path) -> None:
    import pytest
    with pytest.raises(SystemExit, match="no such folder"):
        gpu_fidelity.main([str(tmp_path / "absent")])
