"""The 8xh200-glm45 preset by hand, and the front-end and finish terms it brought."""

from __future__ import annotations

import simpy
import pytest

from thunder.policies.registry import make_policy
from thunder.sim.engine import Replica
from thunder.sim.h200_glm45 import GLM_45_FP8, glm45_h200_datasheet
from thunder.sim.presets import load_engine_spec
from thunder.sim.request import Request
from thunder.sim.run import SimConfig, simulate
from thunder.sim.step_time import profile_from_dict, profile_to_dict
from thunder.traces import EnvSpec, TraceProgram, TraceStep

from sim_builders import engine


def test_model_geometry_by_hand() -> None:
    # 89 MoE layers x 160 experts x (gate, up, down of 5120 x 1536)
    assert GLM_45_FP8.routed_expert_params == 335_963_750_400
    assert GLM_45_FP8.kv_bytes_per_token == 2 * 92 * 8 * 128 * 2 == 376_832


def test_kv_capacity_by_hand() -> None:
    # 8 x (141e9 x 0.9 - 4 GiB) - 355e9 weight bytes = 625,840,261,632 bytes for KV;
    # a block of 16 tokens takes 16 x 376,832 = 6,029,312 bytes -> 103,799 blocks
    for spec in (load_engine_spec("8xh200-glm45"), glm45_h200_datasheet()):
        assert spec.num_blocks == 103_799 and spec.block_size == 16
        assert spec.capacity_tokens == 1_660_784


def test_decode_step_by_hand() -> None:
    spec = load_engine_spec("8xh200-glm45")
    # one sequence over 10,000 tokens of context: memory bound.
    # weights: 19,036,249,600 dense + 5% of 335,963,750,400 routed (8 of 160 experts) = 35,834,437,120 B
    # KV: 10,000 x 376,832 = 3,768,320,000 B; at 8 x 4.8 TB/s x 0.7 = 26.88 TB/s -> 1.473317 ms
    datasheet = (35_834_437_120 + 3_768_320_000) / 26.88e12
    assert glm45_h200_datasheet().step_time.step_s(0, 0.0, 1, 10_000) == pytest.approx(0.004 + datasheet, rel=1e-9)
    # the preset streams weights at its fitted rate (11.05 TB/s) and KV at the datasheet's: 15.79 ms fixed
    step = spec.step_time
    assert step.weight_bytes_per_s == 11.05e12 and step.overhead_s == 0.01579
    fitted = 35_834_437_120 / 11.05e12 + 3_768_320_000 / 26.88e12
    assert step.step_s(0, 0.0, 1, 10_000) == pytest.approx(0.01579 + fitted, rel=1e-9)
    assert step.decode_run_s(1, 10_000, 1)[0] == pytest.approx(0.01579 + fitted, rel=1e-9)


def test_prefill_step_by_hand() -> None:
    step = glm45_h200_datasheet().step_time
    # 1,000 new tokens touch every expert (355 GB to read: memory bound, 13.2 ms); 4,000 at offset 0
    # (pairs 4000 x 2000) are compute bound at 8 x 1979 TFLOP/s x 0.5 = 7.916 PFLOP/s: 36.9 ms
    for tokens in (1000, 4000):
        flops = 2 * 32e9 * tokens + 4 * 92 * 96 * 128 * tokens * tokens / 2
        memory = GLM_45_FP8.weight_bytes_read(tokens) + 376_832 * tokens
        expected = 0.004 + max(flops / 7.916e15, memory / 26.88e12)
        assert step.step_s(tokens, tokens * tokens / 2, 0, 0) == pytest.approx(expected, rel=1e-9)
    assert step.step_s(1000, 500_000.0, 0, 0) == pytest.approx(0.004 + 355_376_832_000 / 26.88e12, rel=1e-6)
    assert step.step_s(4000, 8e6, 0, 0) == pytest.approx(0.004 + 2.92176e14 / 7.916e15, rel=1e-5)


def test_profile_round_trip_keeps_the_new_terms() -> None:
    spec = load_engine_spec("8xh200-glm45")
    again = profile_from_dict(profile_to_dict(spec))
    assert (again.frontend_per_prompt_token_s, again.finish_s) == (spec.frontend_per_prompt_token_s, spec.finish_s)
    assert spec.frontend_per_prompt_token_s > 0 and spec.finish_s > 0


def test_front_end_per_prompt_token_queues_and_finish_delays_delivery() -> None:
    from dataclasses import replace
    spec = replace(engine(64), frontend_s=0.1, frontend_per_prompt_token_s=1e-4, finish_s=0.5)
    env = simpy.Environment()
    replica = Replica(env, 0, spec)
    requests = [Request(program_id=f"p{i}", step_index=0, prompt_tokens=100, output_tokens=3,
                        program_key=("p", f"p{i}", 0), shared_key=None, shared_blocks=0, prior_tokens=0)
                for i in range(2)]
    for request in requests:
        replica.submit(request)
    env.run(until=10)
    first, second = requests
    # front end: 0.1 + 100 x 1e-4 = 0.11 s each, one at a time
    assert first.engine_arrival_s == pytest.approx(0.11) and second.engine_arrival_s == pytest.approx(0.22)
    # prefill 100 tokens (10 ms + 100 us), then two 10 ms decode steps; delivered 0.5 s later
    assert first.first_token_s == pytest.approx(0.1201)
    assert first.done_s == pytest.approx(0.1401 + 0.5)


def test_env_setup_holds_the_worker_before_the_first_call() -> None:
    steps = (TraceStep(prompt_tokens=64, output_tokens=4, tool="bash", tool_s=1.0),
             TraceStep(prompt_tokens=128, output_tokens=4))
    programs = [TraceProgram(program_id=f"p{i}", workflow="t", steps=steps, env=EnvSpec(setup_s=5.0))
                for i in range(2)]
    for env_setup, first_ready in ((True, [5.0, 5.0]), (False, [0.0, 0.0])):
        outcome = simulate(programs, make_policy("vllm"), engine(64), SimConfig(parallel=2, env_setup=env_setup))
        ready = sorted(r["ready_s"] for r in outcome.cluster.records.steps if r["step"] == 0)
        assert ready == first_ready


def test_finish_delay_with_pinning_policies_under_memory_pressure() -> None:
    # Deliveries after finish_s used to reach programs inside a decode jump, where a policy's pin
    # took blocks the jump had counted on (AssertionError: the jump was sized to the free blocks).
    from dataclasses import replace

    from sim_builders import program
    spec = replace(engine(48), finish_s=0.05)
    programs = [program(f"p{i}", [100 + 40 * k for k in range(6)], output=60, tool_s=0.3) for i in range(8)]
    for policy in ("continuum", "thunder", "vllm"):
        outcome = simulate(programs, make_policy(policy), spec, SimConfig(parallel=8))
        assert len(outcome.cluster.records.programs) == 8
        assert len(outcome.cluster.records.steps) == 48
