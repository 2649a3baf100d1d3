"""Simulator scenarios with tool environments, each with a known answer."""

from __future__ import annotations

import pandas as pd
import pytest
from tool_builders import GB, engine, first_dispatch, growing, run, with_env

from thunder.sim.run import SimConfig
from thunder.sim.tool_cluster import drawn_setup_s
from thunder.sim.tool_host import SimHostConfig
from thunder.traces import TraceProgram
from thunder.traces.synth.setup_times import setup_time_distribution

# Six one-turn programs, 10 GB each, two at a time: at most two environments are ever needed.
SIX = [with_env(f"p{i}", [100, 200], setup_s=1.0, disk_gb=10) for i in range(6)]


def test_without_a_tool_policy_nothing_changes():
    assert SimConfig().tool_policy is None
    _, tables, summary = run(SIX, "vllm", engine(256), None, parallel=2)
    assert tables.environments is None and "peak_disk_bytes" not in summary
    assert (tables.steps["queue_s"] == 0).all()  # no environment to wait for


def test_keep_accumulates_every_environment_while_gc_holds_only_the_running_ones():
    _, _, keep = run(SIX, "vllm", engine(256), "keep", parallel=2)
    _, gc_tables, gc = run(SIX, "vllm", engine(256), "on-demand", parallel=2)
    assert keep["peak_disk_bytes"] == 60 * GB  # Figure 2b: one more image per processed workflow
    assert gc["peak_disk_bytes"] == 20 * GB
    assert keep["envs_unreclaimed"] == 6 and gc["envs_unreclaimed"] == 0
    assert (gc_tables.environments["reclaim_reason"] == "released").all()
    assert keep["steps_per_min"] == pytest.approx(gc["steps_per_min"])  # same work, only disk differs


def test_keep_runs_out_of_a_disk_cap_that_gc_stays_under():
    cap = SimHostConfig(disk_capacity_bytes=30 * GB)
    outcome, tables, keep = run(SIX, "vllm", engine(256), "keep", parallel=2, tool_host=cap)
    # p0, p1 and p2 fill the 30 GB; p3 and p4 wait for disk that never frees; p5 never starts.
    assert keep["programs_finished"] == 3
    assert keep["programs_unfinished"] == 2 and keep["programs_waiting_for_disk"] == 2
    assert keep["tool_host_stalled_at_s"] is not None
    assert outcome.end_s == pytest.approx(keep["tool_host_stalled_at_s"] + cap.stall_s, abs=5.0)
    assert set(tables.environments.loc[tables.environments["blocked_on"] == "disk", "program_id"]) == {"p3", "p4"}
    _, _, gc = run(SIX, "vllm", engine(256), "on-demand", parallel=2, tool_host=cap)
    assert gc["programs_finished"] == 6 and gc["programs_waiting_for_disk"] == 0
    assert gc["peak_disk_bytes"] <= 30 * GB and gc["tool_host_stalled_at_s"] is None


# One replica with room for one context at a time (64 blocks x 16 tokens); thunder keeps b queued
# until a ends. Both environments take 5 s to prepare.
EXCLUSIVE = [growing("a", 600, 4, setup_s=5.0), growing("b", 600, 4, setup_s=5.0)]
THUNDER = {"decay_base": 1.0}


def test_prepare_ahead_hides_the_setup_time_that_on_demand_pays():
    _, od_tables, od = run(EXCLUSIVE, "thunder-paper", engine(64), "on-demand", options=THUNDER, parallel=2)
    _, pa_tables, pa = run(EXCLUSIVE, "thunder-paper", engine(64), "program-aware", options=THUNDER, parallel=2)
    a_done = od_tables.steps.query("program_id == 'a'")["done_s"].max()
    # On demand, b's environment is prepared only once b holds the GPU: 5 s more.
    assert first_dispatch(od_tables, "b") == pytest.approx(a_done + 5.0)
    assert first_dispatch(od_tables, "a") == pytest.approx(5.0)
    assert od["mean_env_wait_s"] == pytest.approx(5.0)
    # Program-aware prepared b's while b waited in the queue: dispatched the moment a ended.
    a_done = pa_tables.steps.query("program_id == 'a'")["done_s"].max()
    assert first_dispatch(pa_tables, "b") == pytest.approx(a_done)
    assert pa["mean_env_wait_s"] == pytest.approx(2.5) and pa["envs_prepared_ahead"] == 1
    assert pa["duration_s"] == pytest.approx(od["duration_s"] - 5.0)
    assert pa["steps_per_min"] > od["steps_per_min"]


def test_a_held_program_is_dispatched_to_the_backend_it_holds_once_its_environment_is_ready():
    _, tables, _ = run([with_env("x", [100, 200, 300], setup_s=7.0)], "thunder-paper", engine(64), "program-aware",
                       parallel=1)
    steps = tables.steps
    assert steps.loc[steps.step == 0, "dispatched_s"].item() == pytest.approx(7.0)
    assert steps.loc[steps.step == 0, "queue_s"].item() == pytest.approx(7.0)  # held at the proxy
    assert (steps.loc[steps.step > 0, "queue_s"] == 0).all()  # once only


def test_idle_collection_tears_down_a_queued_environment_and_prepares_it_again_when_needed():
    # b is paused in the queue for long stretches while a runs; a 1 s idle timeout collects b's
    # environment and b prepares it again (a second instance) before it runs again.
    programs = [growing("a", 300, 5, grow=144, tool_s=0.5, setup_s=0.5),
                growing("b", 300, 5, grow=144, tool_s=0.5, setup_s=0.5)]
    _, tables, summary = run(programs, "thunder-paper", engine(64), "program-aware", options=THUNDER, parallel=2,
                             tool_options={"idle_timeout_s": 0.2, "lookahead": 0})
    envs = tables.environments
    assert summary["programs_finished"] == 2
    assert (envs["reclaim_reason"] == "idle").sum() >= 1
    assert envs.groupby("program_id")["instance"].max().max() >= 1
    assert envs["reclaimed_s"].notna().all()


def test_setup_times_missing_from_the_trace_come_from_the_terminal_bench_table_seeded():
    bare = [TraceProgram(program_id="x", workflow="t", steps=with_env("x", [100, 200]).steps)]  # no env
    _, tables, summary = run(bare, "vllm", engine(64), "on-demand", parallel=1,
                             tool_host=SimHostConfig(env_seed=3, default_disk_bytes=7 * GB))
    row = tables.environments.iloc[0]
    assert row["setup_s"] == drawn_setup_s("x", 3) == drawn_setup_s("x", 3)
    table = setup_time_distribution()
    assert table.values[0] <= row["setup_s"] <= table.values[-1]
    assert row["disk_bytes"] == 7 * GB and summary["peak_disk_bytes"] == 7 * GB
    assert drawn_setup_s("x", 3) != drawn_setup_s("x", 4)


def test_disk_in_use_over_time_steps_up_and_back_to_zero():
    _, tables, summary = run(SIX, "vllm", engine(256), "program-aware", parallel=2)
    series: pd.DataFrame = tables.tool_timeseries
    assert series["time_s"].is_monotonic_increasing
    assert series["disk_used_bytes"].iloc[-1] == 0
    assert series["disk_used_bytes"].max() == summary["peak_disk_bytes"] == 20 * GB
    assert 0 < summary["mean_disk_bytes"] <= 20 * GB


def test_on_demand_can_deadlock_on_a_full_disk_where_program_aware_makes_room():
    # 10 GB disk, one environment at a time. a runs; while its tool runs (decayed demand) thunder
    # restores b, whose environment waits for a's disk; a's next turn overflows the cache, so a is
    # paused and, its tool done, cannot come back while b holds the backend. On demand nothing
    # moves again; program-aware tears down the queued a's environment so b can run.
    programs = [growing("a", 300, 4, grow=64, tool_s=2.0, setup_s=1.0), with_env("b", [800, 850], setup_s=1.0)]
    cap = SimHostConfig(disk_capacity_bytes=10 * GB)
    _, _, od = run(programs, "thunder-paper", engine(64), "on-demand", parallel=2, tool_host=cap)
    assert od["programs_finished"] == 0 and od["programs_unfinished"] == 2
    # a is paused at 5.48 and its tool ends at 7.48: nothing happens after that.
    assert od["tool_host_stalled_at_s"] == pytest.approx(7.48, abs=0.01)
    _, tables, pa = run(programs, "thunder-paper", engine(64), "program-aware", parallel=2, tool_host=cap)
    assert pa["programs_finished"] == 2 and pa["tool_host_stalled_at_s"] is None
    envs = tables.environments
    assert list(zip(envs["program_id"], envs["instance"], envs["reclaim_reason"])) == [
        ("a", 0, "make-room"), ("b", 0, "released"), ("a", 1, "released")]


class _ReclaimEverything:
    """A reckless policy: tears down every live environment on every step."""

    name = "reckless"

    def __init__(self, config: object) -> None:
        self.config = config
        self.interval_s = 5.0

    def decide(self, cluster, host):
        from thunder.policies.tools import prepare_needed
        from thunder.core.environments import ReclaimEnv

        return [*prepare_needed(host), *(ReclaimEnv(e.program_id, "reckless") for e in host.envs.values() if e.live)]


def test_the_simulator_never_tears_down_an_environment_under_a_running_step(monkeypatch):
    from thunder.policies import registry
    from thunder.policies.tools import KeepConfig

    monkeypatch.setitem(registry.TOOL_POLICIES, "reckless",
                        registry.Factory("tool policy", "reckless", KeepConfig, _ReclaimEverything))
    programs = [growing("a", 300, 4, tool_s=2.0, setup_s=1.0), growing("b", 400, 3, tool_s=1.0, setup_s=2.0)]
    _, tables, summary = run(programs, "thunder-paper", engine(128), "reckless", parallel=2)
    assert summary["programs_finished"] == 2 and summary["env_reclaims_refused"] > 0
    envs = tables.environments
    steps = tables.steps.sort_values(["program_id", "step"])
    for pid, rows in steps.groupby("program_id"):
        mine = envs[envs.program_id == pid]
        # Each LLM call and the tool call after it ran inside one ready environment instance.
        ends = rows["ready_s"].shift(-1).fillna(rows["done_s"])
        for start, end in zip(rows["dispatched_s"], ends):
            inside = mine[(mine.ready_s <= start) & (mine.reclaimed_s.isna() | (mine.reclaimed_s >= end))]
            assert len(inside) == 1, (pid, start, end)
