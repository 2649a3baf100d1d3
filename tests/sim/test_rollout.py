"""RL rollout mode: a batch that starts at t=0 and runs to the end, and its metrics."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from sim_builders import engine, growing
from typer.testing import CliRunner

from thunder.cli import app
from thunder.policies.registry import make_policy
from thunder.results.rollout import rollout_metrics, straggler_tail_s, time_above
from thunder.results.tables import RunTables, build_tables
from thunder.sim.experiment import CellSpec, run_cell
from thunder.sim.run import SimConfig, rollout_batch, simulate

REPO = Path(__file__).resolve().parents[2]
ROUTING = str(REPO / "traces" / "routing.jsonl")


def known_tables() -> RunTables:
    """Two replicas of 100 tokens sampled every 10 s; ten programs, one step each."""
    rows = []
    for time_s, (a, b) in zip(range(0, 50, 10), [(10, 10), (50, 20), (90, 30), (40, 35), (0, 0)]):
        rows += [{"time_s": time_s, "backend": 0, "capacity_tokens": 100, "running_tokens": a},
                 {"time_s": time_s, "backend": 1, "capacity_tokens": 100, "running_tokens": b}]
    finished = [5, 10, 12, 14, 15, 16, 18, 20, 22, 40]
    programs = [{"program_id": f"p{i}", "arrived_s": 0.0, "finished_s": float(t)} for i, t in enumerate(finished)]
    steps = [{"program_id": f"p{i}", "ready_s": 0.0, "dispatched_s": 0.0, "admitted_s": 0.0,
              "first_token_s": 1.0, "done_s": float(t)} for i, t in enumerate(finished)]
    return build_tables(steps, programs, rows, [])


def test_rollout_metrics_on_a_known_scenario():
    metrics = rollout_metrics(known_tables())
    assert metrics["makespan_s"] == 40
    assert metrics["batch_steps_per_min"] == pytest.approx(10 / 40 * 60)
    # spreads 0, 0.3, 0.6, 0.05, 0: above 20% from t=10 to t=30
    assert metrics["imbalance_peak"] == pytest.approx(0.6)
    assert metrics["imbalance_mean"] == pytest.approx(0.19)
    assert metrics["imbalance_above_s"] == pytest.approx(20)
    # the 9th of 10 finishers (ceil(0.9 * 10)) ends at 22 s, the last at 40 s
    assert metrics["straggler_tail_s"] == 18
    assert metrics["median_finish_s"] == 15.5


def test_metric_helpers_on_edge_cases():
    assert time_above(pd.Series([0.5], index=[0.0]), 0.2) == 0
    assert straggler_tail_s(pd.Series([7.0])) == 0
    assert straggler_tail_s(pd.Series(dtype=float)) == 0


def test_a_batch_larger_than_the_trace_cycles_it_with_fresh_ids():
    trace = [growing(f"t{i}", 100, 2) for i in range(3)]
    batch = rollout_batch(trace, 7)
    assert [p.program_id for p in batch] == ["t0", "t1", "t2", "t0#1", "t1#1", "t2#1", "t0#2"]
    assert rollout_batch(trace, 2) == tuple(trace[:2])
    with pytest.raises(ValueError):
        rollout_batch(trace, 0)


def run_rollout(programs, policy: str, replicas: int = 2):
    batch = rollout_batch(programs, len(programs))
    outcome = simulate(batch, make_policy(policy), engine(256), SimConfig(parallel=len(batch), replicas=replicas))
    records = outcome.cluster.records
    return build_tables(records.steps, records.programs, records.timeseries, records.decisions)


def test_every_program_of_a_rollout_starts_at_zero_and_finishes():
    programs = [growing(f"p{i}", 200 + 40 * i, 4, tool_s=0.5) for i in range(6)]
    tables = run_rollout(programs, "vllm")
    assert len(tables.programs) == 6 and (tables.programs["arrived_s"] == 0).all()
    metrics = rollout_metrics(tables)
    assert metrics["makespan_s"] == pytest.approx(tables.programs["finished_s"].max())
    assert metrics["batch_steps_per_min"] == pytest.approx(24 / metrics["makespan_s"] * 60)


def test_the_gateway_sends_programs_with_one_system_prompt_to_one_replica():
    """Section 3.2 in a small simulation: 900 of each first prompt's 1,000 tokens are the
    shared system prompt, so every new program matches replica 0; vLLM's sticky router
    places new programs on the least-loaded replica instead."""
    programs = [growing(f"p{i}", 1000, 4, shared=900, output=200, tool_s=0.5) for i in range(8)]
    gateway = run_rollout(programs, "gateway")
    assert set(gateway.steps["backend"]) == {0}
    assert rollout_metrics(gateway)["imbalance_peak"] > 0.2
    sticky = run_rollout(programs, "vllm")
    assert set(sticky.steps["backend"]) == {0, 1}


def test_run_cell_rollout_reports_the_batch_and_rejects_a_horizon():
    cell = CellSpec(trace=ROUTING, policy="gateway", parallel=1, replicas=2, preset="h100-llama8b",
                    mode="rollout", programs=80)
    summary, _ = run_cell(cell)
    assert summary["rollout_programs"] == summary["programs_finished"] == summary["parallel"] == 80
    assert summary["makespan_s"] == pytest.approx(summary["duration_s"])
    with pytest.raises(ValueError, match="no horizon"):
        run_cell(CellSpec(trace=ROUTING, policy="vllm", parallel=1, mode="rollout", horizon_s=10.0))
    with pytest.raises(ValueError, match="mode"):
        run_cell(CellSpec(trace=ROUTING, policy="vllm", parallel=1, mode="batch"))


def test_seeds_shuffle_which_programs_a_rollout_takes():
    base = CellSpec(trace=ROUTING, policy="vllm", parallel=1, preset="h100-llama8b", mode="rollout", programs=8)

    def taken(cell: CellSpec) -> set[str]:
        tables = run_cell(cell, keep_tables=True)[1]
        return set(tables.programs["program_id"])

    assert taken(base) == taken(base)
    assert taken(base) != taken(replace(base, seed=1))
    assert len(taken(replace(base, seed=1))) == 8


def test_simulate_rollout_prints_the_batch_and_draws_the_memory_plot(tmp_path):
    result = CliRunner().invoke(app, ["simulate", "--trace", ROUTING, "--policy", "gateway", "--mode", "rollout",
                                      "--programs", "20", "--replicas", "2", "--preset", "h100-llama8b",
                                      "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "rollout         20 programs" in result.output and "90th percentile to last" in result.output
    assert (tmp_path / "memory_balance.png").stat().st_size > 0
