"""Invariants of tool environments over random small workloads (hypothesis)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tool_builders import GB, engine, run, with_env

from thunder.sim.tool_host import SimHostConfig


@st.composite
def workloads(draw):
    programs = []
    for index in range(draw(st.integers(1, 6))):
        turns = draw(st.integers(1, 4))
        prompts = [draw(st.integers(50, 250)) for _ in range(turns)]
        prompts = [sum(prompts[:i + 1]) + 16 * i for i in range(turns)]  # the history only grows
        programs.append(with_env(f"p{index}", prompts, setup_s=draw(st.floats(0.0, 20.0)),
                                 disk_gb=draw(st.integers(1, 20)), ports=draw(st.integers(0, 3)),
                                 tool_s=draw(st.floats(0.0, 5.0))))
    return programs


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs=workloads(), scheduler=st.sampled_from(["vllm", "thunder-paper"]),
       tool_policy=st.sampled_from(["on-demand", "program-aware"]), parallel=st.integers(1, 4),
       blocks=st.integers(80, 160), spare_gb=st.sampled_from([None, 0, 15]), idle=st.sampled_from([2.0, 3600.0]))
def test_gc_reclaims_every_environment_it_created_and_never_overfills_the_disk(
        programs, scheduler, tool_policy, parallel, blocks, spare_gb, idle):
    # A cap no smaller than the largest environment: every program can get one eventually.
    cap = None if spare_gb is None else (max(p.env.disk_bytes for p in programs) + spare_gb * GB)
    if cap is not None and tool_policy == "on-demand" and scheduler == "thunder-paper":
        # On demand, paused programs keep their environments: a full disk can hold up the programs
        # the scheduler restored (a real deadlock, reported as a stall); program-aware makes room.
        cap = None
    options = {"idle_timeout_s": idle} if tool_policy == "program-aware" else {}
    outcome, tables, summary = run(programs, scheduler, engine(blocks), tool_policy, tool_options=options,
                                   parallel=parallel, tool_host=SimHostConfig(disk_capacity_bytes=cap))
    done = sorted(zip(tables.steps["program_id"], tables.steps["step"]))
    assert done == sorted((p.program_id, i) for p in programs for i in range(len(p.steps)))
    envs = tables.environments
    created = envs[envs["started_s"].notna()]
    assert created["reclaimed_s"].notna().all()  # every environment created was reclaimed...
    assert set(created.groupby("program_id")["reclaim_reason"].last()) == {"released"}  # ...the last on release
    assert len(envs) == len(created)  # and none left asking
    assert summary["envs_unreclaimed"] == 0 and summary["tool_host_stalled_at_s"] is None
    series = tables.tool_timeseries
    assert series["disk_used_bytes"].iloc[-1] == 0 and series["ports_used"].iloc[-1] == 0
    assert (series["disk_used_bytes"] >= 0).all()
    if cap is not None:
        assert summary["peak_disk_bytes"] <= cap
    # A program's instances never overlap: each starts after the previous one was torn down.
    for _, rows in created.sort_values(["program_id", "instance"]).groupby("program_id"):
        assert (rows["started_s"].to_numpy()[1:] >= rows["reclaimed_s"].to_numpy()[:-1]).all()
    assert not outcome.cluster.programs  # nobody left behind
