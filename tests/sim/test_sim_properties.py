"""Invariants over random small workloads (hypothesis): nothing lost, doubled or left paused."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sim_builders import engine

from thunder.policies.registry import make_policy
from thunder.sim.run import SimConfig, simulate
from thunder.traces import TraceProgram, TraceStep


@st.composite
def workloads(draw):
    count = draw(st.integers(1, 6))
    shared = draw(st.sampled_from([0, 40, 100]))
    programs = []
    for index in range(count):
        turns = draw(st.integers(1, 5))
        prompt = draw(st.integers(max(shared, 1), 400))
        steps = []
        for turn in range(turns):
            output = draw(st.integers(1, 60))
            last = turn == turns - 1
            reset = turn > 0 and draw(st.booleans()) and draw(st.booleans())
            if reset:
                prompt = draw(st.integers(max(shared, 1), 300))
            steps.append(TraceStep(prompt_tokens=prompt, output_tokens=output, context_reset=reset,
                                   tool=None if last else "t",
                                   tool_s=None if last else draw(st.floats(0.0, 3.0))))
            prompt = prompt + output + draw(st.integers(0, 150))
        programs.append(TraceProgram(program_id=f"p{index}", workflow="w", steps=tuple(steps),
                                     shared_prefix_tokens=shared, shared_prefix_id="s" if shared else None))
    return programs


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs=workloads(), policy=st.sampled_from(["vllm", "continuum", "thunder-paper", "thunder"]),
       parallel=st.integers(1, 4), replicas=st.integers(1, 2), blocks=st.integers(70, 160),
       decay=st.sampled_from([1.0, 2.0]))
def test_every_step_of_every_program_completes_once(programs, policy, parallel, replicas, blocks, decay):
    options = {"decay_base": decay} if policy == "thunder-paper" else {}
    outcome = simulate(programs, make_policy(policy, **options), engine(blocks), 
                       SimConfig(parallel=parallel, replicas=replicas))
    records = outcome.cluster.records
    done = sorted((row["program_id"], row["step"]) for row in records.steps)
    expected = sorted((p.program_id, i) for p in programs for i in range(len(p.steps)))
    assert done == expected  # none lost, none doubled
    assert sorted(row["program_id"] for row in records.programs) == sorted(p.program_id for p in programs)
    assert not outcome.cluster.programs and not outcome.cluster.views  # nobody left paused or active
    for row in records.steps:
        assert 0 <= row["cached_tokens"] < row["prompt_tokens"]
        assert row["recompute_tokens"] >= 0
        assert row["ready_s"] <= row["dispatched_s"] <= row["admitted_s"] <= row["first_token_s"] <= row["done_s"]
    for replica in outcome.replicas:
        replica.cache.check()
        assert replica.cache.used_blocks == 0  # every block of every request was given back
        assert not replica.running and not replica.waiting
    assert all(value >= 0 for value in outcome.ledger.token_seconds.values())
