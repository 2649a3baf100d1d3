"""Calibration: the features the simulated engine charges, the non-negative fit
recovering known coefficients, profiles round-tripping, and the per-request
overhead the simulator adds."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from thunder.core.probes import (COEFFICIENTS, STEP_FEATURES, LoadProbe, Measurements, PrefixCacheCheck, Probe,
                                 ProbeRun, ServerFacts, default_probes, fit_linear, nnls)
from thunder.sim.fit_profile import build_profile, fit_engine_spec, probe_features
from thunder.sim.presets import load_engine_spec
from thunder.sim.run import SimConfig, simulate
from thunder.sim.step_time import EngineSpec, StepTimeModel, profile_from_dict, profile_to_dict
from thunder.traces import TraceProgram, TraceStep

TRUE = {"overhead_s": 2.0e-3, "per_prefill_token_s": 8.0e-6, "per_decode_seq_s": 7.0e-5,
        "per_context_token_s": 2.0e-7, "per_prefill_pair_s": 1.8e-8, "per_admitting_step_s": 0.0,
        "request_overhead_s": 6.0e-3}


def geometry(budget: int = 2048) -> EngineSpec:
    return EngineSpec(name="geometry", num_blocks=512, block_size=32, max_num_seqs=128,
                      max_num_batched_tokens=budget, step_time=StepTimeModel())


def synthetic_runs(noise: float, repeats: int = 3, seed: int = 0) -> list[ProbeRun]:
    """Latencies the true model gives each probe's requests, times (1 + noise * N(0, 1))."""
    rng = np.random.default_rng(seed)
    step = np.array([TRUE[name] for name in STEP_FEATURES])
    runs = []
    for _ in range(repeats):
        for probe in default_probes(4096, 16384, 2048):
            exact = probe_features(probe, geometry()) @ step + TRUE["request_overhead_s"]
            runs.append(ProbeRun(probe, tuple(exact * (1 + noise * rng.standard_normal(len(exact))))))
    return runs


def test_features_follow_the_engines_chunking_and_batching():
    one = probe_features(Probe("long", 1, 3000, 1), geometry())
    # two chunks, and only the first step admits
    assert one.tolist() == [[2.0, 3000.0, 0.0, 0.0, 2048 * 1024 + 952 * (2048 + 476), 1.0]]
    batch = probe_features(Probe("batch", 8, 512, 1), geometry())
    # the budget takes four prompts per step: the first four finish after step 1, the rest after step 2
    assert batch[:4, 0].tolist() == [1.0] * 4 and batch[4:, 0].tolist() == [2.0] * 4
    assert batch[4:, 1].tolist() == [4096.0] * 4
    assert batch[:4, 5].tolist() == [1.0] * 4 and batch[4:, 5].tolist() == [2.0] * 4  # both steps admit
    decode = probe_features(Probe("decode", 4, 32, 64), geometry())
    # step 1 prefills 4 x 32 and samples each first token; 63 decode steps of 4 sequences follow
    steps, prefill, seqs, context, _, admitting = decode[0]
    assert admitting == 1.0
    assert (steps, prefill, seqs) == (64.0, 128.0, 63.0 * 4)
    assert context == sum(4 * (32 + i) for i in range(63))


def test_exact_latencies_recover_the_coefficients():
    # From client latencies the admitting-step cost is one more constant per request, as
    # the intercept is: the fit holds it at 0 (fit_engine_spec does the same).
    fit = fit_linear(*_stack(synthetic_runs(noise=0.0, repeats=1)), fixed_zero=("per_admitting_step_s",))
    for name in COEFFICIENTS:
        assert fit.coefficients[name] == pytest.approx(TRUE[name], rel=1e-6)
    assert fit.r2 == pytest.approx(1.0)


def test_noisy_latencies_recover_the_coefficients_within_noise():
    spec, fit, residuals = fit_engine_spec(synthetic_runs(noise=0.03, repeats=5), geometry())
    assert fit.r2 > 0.99 and fit.median_abs_rel_error < 0.03
    step = spec.step_time
    assert step.overhead_s == pytest.approx(TRUE["overhead_s"], rel=0.25)
    assert step.per_decode_seq_s == pytest.approx(TRUE["per_decode_seq_s"], rel=0.25)
    assert step.per_context_token_s == pytest.approx(TRUE["per_context_token_s"], rel=0.25)
    assert step.per_prefill_pair_s == pytest.approx(TRUE["per_prefill_pair_s"], rel=0.25)
    assert all(abs(r["rel_error"]) < 0.1 for r in residuals)


def test_coefficients_are_never_negative():
    # A term absent from the data (no context cost) and noise: plain least squares
    # may go below zero; the non-negative fit stays at zero or above.
    runs = synthetic_runs(noise=0.05, repeats=2, seed=3)
    fit = fit_linear(*_stack(runs))
    assert all(v >= 0 for v in fit.coefficients.values())
    a = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 2.0]])
    assert nnls(a, np.array([2.0, 1.0, 0.0])).tolist() == pytest.approx([1.0, 0.0])


def test_profile_round_trips_with_every_field():
    spec = dataclasses.replace(geometry(), step_time=StepTimeModel(**{k: TRUE[k] for k in STEP_FEATURES}),
                               sources={"why": "test"}, request_overhead_s=0.004, admit_full_prompt=True)
    data = json.loads(json.dumps(profile_to_dict(spec)))
    assert profile_from_dict(data) == spec
    del data["request_overhead_s"], data["admit_full_prompt"]  # profiles older than the fields still load
    assert profile_from_dict(data).request_overhead_s == 0.0
    assert profile_from_dict(data).admit_full_prompt is False
    with pytest.raises(ValueError, match="admit_full_prompt must be true or false"):
        profile_from_dict({**data, "admit_full_prompt": "yes"})


def test_build_profile_records_measurements_and_loads_as_a_profile(tmp_path):
    facts = ServerFacts(version="0.32.0", model="tiny", max_model_len=4096, block_size=32, num_blocks=512,
                        cache_config={"block_size": "32", "num_gpu_blocks": "512"})
    prefix = PrefixCacheCheck(prompt_tokens=1000, first_cached_tokens=0, repeat_cached_tokens=992,
                              extended_prompt_tokens=1100, extended_cached_tokens=992, first_latency_s=0.04,
                              repeat_latency_s=0.01, extended_latency_s=0.02)
    load = LoadProbe(clients=8, requests_each=6, prompt_tokens=1024, output_tokens=32,
                     mean_client_latency_s=0.33, mean_engine_s=0.28)
    measured = Measurements(facts=facts, runs=tuple(synthetic_runs(0.0, repeats=1)), prefix=prefix,
                            preemptions=0.0, duration_s=12.0, load=load)
    profile = build_profile(measured, 2048, 128, name="tiny-test", serving_flags="--block-size 32")
    assert profile["calibration"]["engine_version"] == "0.32.0"
    assert profile["calibration"]["prefix_cache"]["matches_simulator"] is True
    # The front end costs one request what the fit's intercept says; the load probe checks
    # the queue model (8 clients finishing together wait 4.5 services on average).
    assert profile["request_overhead_s"] == 0.0
    assert profile["frontend_s"] == pytest.approx(TRUE["request_overhead_s"], rel=1e-6)
    check = profile["calibration"]["frontend_check"]
    assert check["measured_s"] == pytest.approx(0.05)
    assert check["predicted_s"] == pytest.approx(4.5 * TRUE["request_overhead_s"], rel=1e-6)
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(profile))
    spec = load_engine_spec(str(path))
    assert (spec.num_blocks, spec.block_size, spec.max_num_batched_tokens) == (512, 32, 2048)
    assert spec.step_time.per_prefill_pair_s == pytest.approx(TRUE["per_prefill_pair_s"], rel=1e-6)
    assert spec.admit_full_prompt is True  # vLLM 0.32's admission rule, unless told otherwise
    earlier = build_profile(measured, 2048, 128, admit_full_prompt=False)
    assert earlier["admit_full_prompt"] is False and "first chunk" in earlier["sources"]["scheduler"]


def test_bundled_calibrated_preset_loads():
    spec = load_engine_spec("tiny-cpu-calibrated")
    assert spec.capacity_tokens == 16384 and spec.block_size == 32
    assert spec.step_time.overhead_s > 0 and spec.step_time.per_prefill_pair_s > 0
    assert "engine" in spec.sources
    assert spec.admit_full_prompt is True


def test_request_overhead_delays_a_request_by_exactly_that_much():
    program = TraceProgram(program_id="p", workflow="t", steps=(TraceStep(prompt_tokens=100, output_tokens=10),))
    spec = EngineSpec(name="t", num_blocks=64, block_size=16, max_num_seqs=8, max_num_batched_tokens=2048,
                      step_time=StepTimeModel(overhead_s=0.01))
    latencies = []
    for overhead in (0.0, 0.25):
        outcome = simulate([program], _vllm(), dataclasses.replace(spec, request_overhead_s=overhead),
                           SimConfig(parallel=1))
        row = outcome.cluster.records.steps[0]
        latencies.append(row["done_s"] - row["ready_s"])
    assert latencies[0] == pytest.approx(0.1)
    assert latencies[1] == pytest.approx(0.35)


def test_front_end_serves_requests_one_at_a_time():
    # Three programs ready at once: the front end takes 0.05 s for each, in turn.
    programs = [TraceProgram(program_id=f"p{i}", workflow="t", steps=(TraceStep(prompt_tokens=100, output_tokens=10),))
                for i in range(3)]
    spec = EngineSpec(name="t", num_blocks=64, block_size=16, max_num_seqs=8, max_num_batched_tokens=2048,
                      step_time=StepTimeModel(overhead_s=0.01), frontend_s=0.05)
    outcome = simulate(programs, _vllm(), spec, SimConfig(parallel=3))
    rows = outcome.cluster.records.steps
    assert sorted(r["engine_arrival_s"] - r["dispatched_s"] for r in rows) == pytest.approx([0.05, 0.10, 0.15])
    later = simulate(programs[:1], _vllm(), spec, SimConfig(parallel=1)).cluster.records.steps[0]
    assert later["engine_arrival_s"] - later["dispatched_s"] == pytest.approx(0.05)  # alone: no queue


def test_requests_in_the_front_end_count_as_waiting_for_the_router():
    # Both programs start at once; the first one's request is still in the front end when
    # the second is routed: a router that counts what it sent spreads them.
    programs = [TraceProgram(program_id=f"p{i}", workflow="t", steps=(TraceStep(prompt_tokens=100, output_tokens=10),))
                for i in range(2)]
    spec = EngineSpec(name="t", num_blocks=64, block_size=16, max_num_seqs=8, max_num_batched_tokens=2048,
                      step_time=StepTimeModel(overhead_s=0.01), frontend_s=0.05)
    rows = simulate(programs, _vllm(), spec, SimConfig(parallel=2, replicas=2)).cluster.records.steps
    assert sorted(r["backend"] for r in rows) == [0, 1]


def _vllm():  # type: ignore[no-untyped-def]
    from thunder.policies.registry import make_policy
    return make_policy("vllm")


def _stack(runs: list[ProbeRun]) -> tuple[np.ndarray, np.ndarray]:
    from thunder.sim.fit_profile import design
    features, latencies, _ = design(runs, geometry())
    return features, latencies


ENGINE_TRUE = {**{k: TRUE[k] for k in STEP_FEATURES}, "per_admitting_step_s": 3.0e-3}
FRONT_END_S = 4.0e-3


def engine_runs(noise: float, repeats: int = 3, seed: int = 0) -> list[ProbeRun]:
    """Runs whose engine time follows ENGINE_TRUE (admitting steps cost 3 ms) and whose
    clients see 4 ms more per request (the front end), noise on both."""
    rng = np.random.default_rng(seed)
    step = np.array([ENGINE_TRUE[name] for name in STEP_FEATURES])
    runs = []
    for _ in range(repeats):
        for probe in default_probes(4096, 16384, 2048):
            engine = probe_features(probe, geometry()) @ step * (1 + noise * rng.standard_normal(probe.count))
            runs.append(ProbeRun(probe, tuple(engine + FRONT_END_S), engine_s=float(engine.mean())))
    return runs


def test_engine_times_recover_the_admitting_step_cost_and_the_front_end():
    spec, fit, residuals = fit_engine_spec(engine_runs(noise=0.0, repeats=1), geometry())
    for name in STEP_FEATURES:
        assert getattr(spec.step_time, name) == pytest.approx(ENGINE_TRUE[name], rel=1e-6)
    assert fit.coefficients["request_overhead_s"] == 0.0  # the engine's time is made of steps
    assert all(abs(r["rel_error"]) < 1e-6 for r in residuals)
    noisy, _, _ = fit_engine_spec(engine_runs(noise=0.03, repeats=5, seed=2), geometry())
    assert noisy.step_time.per_admitting_step_s == pytest.approx(3.0e-3, rel=0.3)
    assert noisy.step_time.per_decode_seq_s == pytest.approx(ENGINE_TRUE["per_decode_seq_s"], rel=0.25)


def test_a_profile_from_engine_times_puts_the_rest_in_the_front_end():
    facts = ServerFacts(version="0.32.0", model="tiny", max_model_len=4096, block_size=32, num_blocks=512,
                        cache_config={})
    prefix = PrefixCacheCheck(prompt_tokens=1000, first_cached_tokens=0, repeat_cached_tokens=992,
                              extended_prompt_tokens=1100, extended_cached_tokens=992, first_latency_s=0.04,
                              repeat_latency_s=0.01, extended_latency_s=0.02)
    measured = Measurements(facts=facts, runs=tuple(engine_runs(0.0, repeats=2)), prefix=prefix,
                            preemptions=0.0, duration_s=12.0)
    profile = build_profile(measured, 2048, 128, name="tiny-engine")
    assert profile["frontend_s"] == pytest.approx(FRONT_END_S, rel=1e-6)
    assert profile["request_overhead_s"] == 0.0
    assert profile["step_time"]["per_admitting_step_s"] == pytest.approx(3.0e-3, rel=1e-6)
    assert profile["calibration"]["fit_target"] == "engine time per request"
    assert "queue + inference histograms" in profile["sources"]["step_time"]
    assert "minus the engine's own time" in profile["sources"]["frontend"]
    # one run without the engine's account: back to client latencies and the intercept
    mixed = dataclasses.replace(measured, runs=measured.runs[:-1] + (dataclasses.replace(measured.runs[-1],
                                                                                         engine_s=None),))
    assert build_profile(mixed, 2048, 128)["calibration"]["fit_target"] == "client latency"


def test_a_step_that_admits_pays_once_however_many_it_admits():
    step = StepTimeModel(overhead_s=1e-3, per_admitting_step_s=3e-3)
    assert step.step_s(32, 0.0, 0, 0, joined=0) == pytest.approx(1e-3)
    assert step.step_s(32, 0.0, 0, 0, joined=1) == step.step_s(512, 0.0, 0, 0, joined=16) == pytest.approx(4e-3)


def test_a_probe_slowed_by_outside_load_is_left_out_not_fitted():
    clean = synthetic_runs(noise=0.02, repeats=3, seed=5)
    disturbed = [ProbeRun(r.probe, tuple(6 * v for v in r.latencies_s)) if r.probe.name == "decode-16x32" else r
                 for r in clean]
    spec, fit, _ = fit_engine_spec(disturbed, geometry())
    assert fit.excluded == ("decode-16x32",)
    assert spec.step_time.per_prefill_pair_s == pytest.approx(TRUE["per_prefill_pair_s"], rel=0.25)
    assert spec.step_time.overhead_s == pytest.approx(TRUE["overhead_s"], rel=0.35)
    _, clean_fit, _ = fit_engine_spec(clean, geometry())
    assert clean_fit.excluded == ()


def test_a_probe_faster_than_the_others_predict_is_never_left_out():
    # Outside load only slows a probe down: a fast one is kept, however far off.
    clean = synthetic_runs(noise=0.02, repeats=3, seed=5)
    fast = [ProbeRun(r.probe, tuple(v / 6 for v in r.latencies_s)) if r.probe.name == "decode-16x32" else r
            for r in clean]
    _, fit, _ = fit_engine_spec(fast, geometry())
    assert "decode-16x32" not in fit.excluded
