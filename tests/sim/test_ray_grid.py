"""`thunder compare --executor ray`: one Ray task per cell on a local Ray instance,
results in the cells' order and equal to the local executor's."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from thunder.cli import app
from thunder.sim.experiment import CellSpec
from thunder.sim.ray_grid import run_grid_ray, run_shipped_cell

REPO = Path(__file__).resolve().parents[2]
ROUTING = str(REPO / "traces" / "routing.jsonl")
GRID = ["--trace", ROUTING, "--preset", "rtx5090-qwen3-8b", "--policies", "vllm,autellix",
        "--parallel", "4,8", "--seeds", "0,1"]


def test_a_shipped_cell_runs_from_the_bytes_and_reports_the_original_paths():
    cell = CellSpec(trace=ROUTING, policy="gateway", parallel=4, preset="rtx5090-qwen3-8b")
    summary = run_shipped_cell(cell, Path(ROUTING).read_bytes(), None)
    assert summary["trace"] == ROUTING and summary["programs_finished"] == 64


def test_without_ray_the_executor_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    with pytest.raises(RuntimeError, match="pip install 'thunder\\[ray\\]'"):
        run_grid_ray([CellSpec(trace=ROUTING, policy="vllm", parallel=4)])


@pytest.mark.slow
def test_compare_on_a_local_ray_instance_matches_local_processes(tmp_path):
    pytest.importorskip("ray", reason="ray is not installed (pip install 'thunder[ray]')")
    runner = CliRunner()
    on_ray = runner.invoke(app, ["compare", *GRID, "--executor", "ray", "--out", str(tmp_path / "ray")])
    assert on_ray.exit_code == 0, on_ray.output
    local = runner.invoke(app, ["compare", *GRID, "--out", str(tmp_path / "local")])
    assert local.exit_code == 0, local.output
    ray_rows = pd.read_csv(tmp_path / "ray" / "results.csv")
    local_rows = pd.read_csv(tmp_path / "local" / "results.csv")
    assert len(ray_rows) == 8  # 2 policies x 2 levels x 2 seeds, one row each
    pd.testing.assert_frame_equal(ray_rows, local_rows)
    assert list(ray_rows["seed"]) == [0, 0, 0, 0, 1, 1, 1, 1]
    # the printed table averages over the two seeds
    assert "steps_per_min" in on_ray.output and (tmp_path / "ray" / "throughput.png").exists()
