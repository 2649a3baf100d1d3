"""Small seeded scenarios with known answers: thrashing, pausing, migration."""

from __future__ import annotations

import pandas as pd
import pytest
from sim_builders import engine, growing, program, replace

from thunder.policies.registry import make_policy
from thunder.results.tables import build_tables, summarize
from thunder.sim import engine as engine_module
from thunder.sim.run import SimConfig, simulate


def run(programs, policy: str, spec, **config):
    options = config.pop("options", {})
    outcome = simulate(programs, make_policy(policy, **options), spec, SimConfig(**config), policy_name=policy)
    records = outcome.cluster.records
    tables = build_tables(records.steps, records.programs, records.timeseries, records.decisions)
    return outcome, tables, summarize(tables, outcome.ledger, outcome.end_s)


# One replica with room for one grown context (64 blocks x 16 = 1,024 tokens);
# two programs whose contexts reach 956 tokens each: together they cannot stay.
ALTERNATING = [growing("a", 300, 5, grow=144, tool_s=0.5), growing("b", 300, 5, grow=144, tool_s=0.5)]


def test_vllm_thrashes_when_two_contexts_exceed_the_cache():
    _, tables, summary = run(ALTERNATING, "vllm", engine(64), parallel=2)
    late = tables.steps[tables.steps["step"] >= 3]
    assert summary["recompute_tokens"] > 0
    assert summary["cost_recompute"] > 0
    # Once both contexts are large, each turn finds little of its history cached.
    assert (late["cached_tokens"] < late["prompt_tokens"] / 2).all()


# Each context alone fits (600 -> 856 tokens), both together never do.
EXCLUSIVE = [growing("a", 600, 4, grow=64, tool_s=0.5), growing("b", 600, 4, grow=64, tool_s=0.5)]


def test_vllm_re_prefills_every_turn_when_only_one_context_fits():
    _, tables, summary = run(EXCLUSIVE, "vllm", engine(64), parallel=2)
    assert summary["recompute_tokens"] > 0
    later = tables.steps[tables.steps["step"] > 0]
    assert (later["recompute_tokens"] > 0).sum() >= 4


def test_thunder_keeps_one_program_waiting_and_never_recomputes():
    _, tables, summary = run(EXCLUSIVE, "thunder-paper", engine(64), parallel=2, options={"decay_base": 1.0})
    assert summary["recompute_tokens"] == 0
    assert summary["cost_recompute"] == 0
    steps = tables.steps.set_index(["program_id", "step"])
    # b waits in the global queue until a has finished, then runs alone.
    assert steps.loc[("b", 0), "dispatched_s"] >= steps.loc[("a", 3), "done_s"]
    assert summary["kv_hit_rate"] > run(EXCLUSIVE, "vllm", engine(64), parallel=2)[2]["kv_hit_rate"]


def test_thunder_pauses_the_shorter_acting_program_when_contexts_outgrow_the_cache():
    _, tables, summary = run(ALTERNATING, "thunder-paper", engine(64), parallel=2, options={"decay_base": 1.0})
    vllm = run(ALTERNATING, "vllm", engine(64), parallel=2)[2]
    assert summary["pauses"] == 1
    paused = tables.decisions.loc[tables.decisions["action"] == "pause", "program_id"].item()
    # Only the paused program re-prefills, once, on the turn it is restored.
    redone = tables.steps[tables.steps["recompute_tokens"] > 0]
    assert list(redone["program_id"]) == [paused]
    assert summary["recompute_tokens"] < vllm["recompute_tokens"]
    assert summary["preemptions"] == 0


# Two replicas; a and c grow past one replica together, b and d are one-turn programs.
IMBALANCE = [growing("a", 300, 8, grow=64, tool_s=0.5), program("b", [100]),
             growing("c", 300, 8, grow=64, tool_s=0.5), program("d", [100])]


def _backends_used(tables) -> dict[str, set[int]]:
    return tables.steps.groupby("program_id")["backend"].agg(set).to_dict()


def test_sticky_routing_leaves_a_replica_idle_while_the_other_thrashes():
    _, tables, summary = run(IMBALANCE, "vllm", engine(64), parallel=4, replicas=2)
    used = _backends_used(tables)
    assert used["a"] == used["c"] and len(used["a"]) == 1  # pinned together
    assert used["b"] == used["d"] != used["a"]
    assert summary["recompute_tokens"] > 0
    assert summary["imbalance_peak"] > 0.5


def test_the_global_queue_moves_a_program_to_the_idle_replica():
    _, tables, summary = run(IMBALANCE, "thunder-paper", engine(64), parallel=4, replicas=2,
                             options={"decay_base": 1.0})
    vllm_summary = run(IMBALANCE, "vllm", engine(64), parallel=4, replicas=2)[2]
    assert summary["migrations"] >= 1
    used = _backends_used(tables)
    assert used["a"] | used["c"] == {0, 1}  # the long programs end up spread over both
    assert summary["recompute_tokens"] < vllm_summary["recompute_tokens"]


def test_continuum_pins_acting_programs_kv():
    outcome, tables, summary = run(ALTERNATING, "continuum", engine(64), parallel=2)
    assert (tables.decisions["action"] == "pin").sum() >= 1
    assert summary["steps"] == 10


@pytest.mark.parametrize("policy", ["vllm", "continuum", "thunder-paper"])
def test_cost_terms_add_up_to_capacity_times_time(policy):
    outcome, _, _ = run(ALTERNATING + [program("short", [100])], policy, engine(64), parallel=3, replicas=2)
    capacity = 64 * 16 * 2
    assert outcome.ledger.total == pytest.approx(capacity * outcome.end_s, rel=1e-9)
    assert all(v >= 0 for v in outcome.ledger.token_seconds.values())


@pytest.mark.parametrize("policy", ["vllm", "continuum", "thunder-paper"])
def test_decode_jumps_match_one_event_per_step(policy):
    # Tool times off the 10 ms step grid: an arrival exactly on a step boundary is a
    # tie whose order even the one-step-per-event reference settles by float rounding.
    programs = [growing(f"p{i}", 200 + 40 * i, 6, grow=96, output=40 + 7 * i, tool_s=0.3137 + 0.1013 * i)
                for i in range(6)]
    spec = engine(96, max_num_batched_tokens=256)
    jumped = run(programs, policy, spec, parallel=4)
    stepped = run(programs, policy, spec, parallel=4, jump_decode=False)
    columns = ["program_id", "step", "backend", "done_s", "cached_tokens", "recompute_tokens", "preemptions"]
    left = jumped[1].steps[columns].sort_values(["program_id", "step"]).reset_index(drop=True)
    right = stepped[1].steps[columns].sort_values(["program_id", "step"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(left, right, check_exact=False, rtol=1e-9, atol=1e-9)
    for term, value in jumped[0].ledger.token_seconds.items():
        assert value == pytest.approx(stepped[0].ledger.token_seconds[term], rel=1e-9, abs=1e-6)


# Traces for the exact comparison: arrivals off the 10 ms step grid (no ties), and
# between them a cache too small for all (preemptions and explicit steps), a shared
# system prompt, two replicas, and chunked prefills that straddle decode runs.
EXACT_CASES = {
    "roomy": ([growing(f"p{i}", 200 + 40 * i, 6, grow=96, output=40 + 7 * i, tool_s=0.3137 + 0.1013 * i)
               for i in range(6)], engine(96, max_num_batched_tokens=256), {"parallel": 4}),
    "tight-shared": ([growing(f"q{i}", 150 + 30 * i, 5, grow=80, output=60 + 11 * i, tool_s=0.2171 + 0.0719 * i,
                              shared=64) for i in range(7)], engine(80, max_num_batched_tokens=128),
                     {"parallel": 5}),
    "two-replicas": ([growing(f"r{i}", 300 + 25 * i, 4, grow=120, output=90 - 9 * i, tool_s=0.1931 + 0.0557 * i)
                      for i in range(8)], engine(72, max_num_batched_tokens=192), {"parallel": 6, "replicas": 2}),
}


@pytest.mark.parametrize("case", sorted(EXACT_CASES))
@pytest.mark.parametrize("policy", ["vllm", "continuum", "thunder"])
def test_fast_engine_gives_identical_step_records_to_one_event_per_step(policy, case, monkeypatch):
    # Every shortcut of the engine (decode jumps ending on the sequential sum of their step
    # times, short jumps planned without numpy, preemption without the explicit path)
    # against the reference that takes one SimPy event per step and preempts request by
    # request: the records must be equal, not close.
    programs, spec, config = EXACT_CASES[case]
    fast = run(programs, policy, spec, **config)[0]
    stepped = run(programs, policy, spec, jump_decode=False, **config)[0]
    monkeypatch.setattr(engine_module, "SHORT_JUMP_STEPS", 0)  # every jump planned by numpy
    vectorised = run(programs, policy, spec, **config)[0]
    for other in (stepped, vectorised):
        assert fast.cluster.records.steps == other.cluster.records.steps
        assert fast.cluster.records.decisions == other.cluster.records.decisions
        assert fast.cluster.records.programs == other.cluster.records.programs
    assert sum(r.counters.jumps for r in fast.replicas) > 0  # the shortcuts were taken
    if policy != "thunder":  # thunder pauses before the cache runs short
        assert sum(r.counters.lazy_preemption_steps for r in fast.replicas) > 0
    assert sum(r.counters.lazy_preemption_steps for r in stepped.replicas) == 0
    assert vectorised.ledger.token_seconds == fast.ledger.token_seconds
    for term, value in fast.ledger.token_seconds.items():  # charged per jump by dot products
        assert value == pytest.approx(stepped.ledger.token_seconds[term], rel=1e-9, abs=1e-6)


def test_same_inputs_give_identical_runs():
    programs = [growing(f"p{i}", 300 + 50 * i, 5, grow=100, tool_s=0.2 * i) for i in range(5)]
    first = run(programs, "thunder-paper", engine(80), parallel=3, replicas=2)[1]
    second = run(programs, "thunder-paper", engine(80), parallel=3, replicas=2)[1]
    pd.testing.assert_frame_equal(first.steps, second.steps)
    pd.testing.assert_frame_equal(first.decisions, second.decisions)


def test_a_request_larger_than_a_replica_is_a_clear_error():
    from thunder.sim.cluster import SimulationError
    with pytest.raises(SimulationError, match="exceed a replica's KV capacity"):
        run([program("big", [5000])], "vllm", engine(64), parallel=1)


# 320 tokens of KV, 64-token prefill chunks: a decodes to 250 tokens while b's
# 240-token prompt arrives. b's first chunk fits, its whole prompt does not.
LATE_LONG_PROMPT = [program("a", [100], output=150), program("b", [240], output=16, arrival_s=0.05)]


def test_admitting_on_the_first_chunk_preempts_when_later_chunks_find_the_cache_full():
    spec = engine(20, max_num_batched_tokens=64)
    _, _, first_chunk = run(LATE_LONG_PROMPT, "vllm", spec, parallel=2)
    _, tables, full_prompt = run(LATE_LONG_PROMPT, "vllm", replace(spec, admit_full_prompt=True), parallel=2)
    assert first_chunk["preemptions"] > 0
    assert full_prompt["preemptions"] == 0
    steps = tables.steps.set_index("program_id")
    # vLLM 0.32's gate: b waits until a's blocks are back, then runs whole.
    assert steps.loc["b", "admitted_s"] >= steps.loc["a", "done_s"]
