"""Fit an engine profile to live measurements, through the simulated engine itself.

For each probe (``thunder.core.probes.Probe``) we run the simulated replica with
a stand-in step-time model that makes every step last one second and records
the step's features (prefill tokens, decoding sequences, context tokens, prefill attention pairs). A
request that finishes at t = k waited through steps 1..k, so its feature sums
are the cumulative sums at k. Least squares on those sums then fits exactly the
model the simulator will charge, with its chunked prefill, token budget and
block rounding, instead of a hand-derived approximation of them.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any, Sequence, cast

import numpy as np
import simpy

from thunder.core.probes import (STEP_FEATURES, LinearFit, LoadProbe, Measurements, Probe, ProbeRun, fit_linear,
                                predict, run_summary)
from thunder.sim.engine import Replica
from thunder.sim.request import Request
from thunder.sim.step_time import EngineSpec, StepTimeModel, profile_to_dict


class _FeatureClock:
    """Duck-types ``StepTimeModel``: each step lasts 1 s; its features are recorded."""

    def __init__(self) -> None:
        self.rows: list[tuple[float, float, float, float, float, float]] = []

    def step_s(self, prefill_tokens: int, prefill_attention_pairs: float, decode_seqs: int,
               context_tokens: int, joined: int = 0) -> float:
        self.rows.append((1.0, float(prefill_tokens), float(decode_seqs), float(context_tokens),
                          float(prefill_attention_pairs), 1.0 if joined else 0.0))
        return 1.0

    def decode_run_s(self, decode_seqs: int, context_tokens: int, steps: int) -> np.ndarray:
        # Same growth as StepTimeModel.decode_run_s: each step adds one token per sequence.
        for i in range(steps):
            self.rows.append((1.0, 0.0, float(decode_seqs), float(context_tokens + decode_seqs * i), 0.0, 0.0))
        return np.ones(steps)


def probe_features(probe: Probe, geometry: EngineSpec) -> np.ndarray:
    """Per request of ``probe`` (all submitted at t=0 in send order), the sums of
    ``STEP_FEATURES`` over the engine steps until it completes; shape (count, 6)."""
    clock = _FeatureClock()
    spec = replace(geometry, step_time=cast(StepTimeModel, clock))
    env = simpy.Environment()
    replica = Replica(env, 0, spec)
    requests = [Request(program_id=f"probe-{i}", step_index=0, prompt_tokens=probe.prompt_tokens,
                        output_tokens=probe.output_tokens, program_key=("p", f"probe-{i}", 0),
                        shared_key=None, shared_blocks=0, prior_tokens=0) for i in range(probe.count)]
    for request in requests:
        replica.submit(request)
    env.run(until=10_000_000)  # far beyond any probe; the replica idles once all are done
    cumulative = np.cumsum(np.array(clock.rows), axis=0)
    features = []
    for request in requests:
        if request.done_s is None:
            raise ValueError(f"probe {probe.name}: request never finished in the simulated engine")
        features.append(cumulative[int(round(request.done_s)) - 1])
    return np.array(features)


def design(runs: Sequence[ProbeRun], geometry: EngineSpec) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Feature rows, latencies and probe names: one row per request position of each
    probe, its latency the median over the probe's repeats (robust to a burst of
    load from elsewhere on the machine during one repeat)."""
    grouped: dict[Probe, list[tuple[float, ...]]] = {}
    for run in runs:
        if len(run.latencies_s) != run.probe.count:
            raise ValueError(f"probe {run.probe.name}: {len(run.latencies_s)} latencies for {run.probe.count} requests")
        grouped.setdefault(run.probe, []).append(run.latencies_s)
    rows, latencies, names = [], [], []
    for probe, repeats in grouped.items():
        rows.append(probe_features(probe, geometry))
        latencies.extend(np.median(np.array(repeats), axis=0))
        names.extend([probe.name] * probe.count)
    return np.vstack(rows), np.array(latencies), names


def engine_side(runs: Sequence[ProbeRun]) -> bool:
    """Whether every run has the engine's own time (vLLM's request-time histograms)."""
    return bool(runs) and all(run.engine_s is not None and run.engine_s > 0 for run in runs)


def design_engine(runs: Sequence[ProbeRun], geometry: EngineSpec) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One row per probe: its requests' mean feature sums, and the median over repeats of
    their mean time in the engine (the histograms give sums per run, not per request)."""
    grouped: dict[Probe, list[float]] = {}
    for run in runs:
        grouped.setdefault(run.probe, []).append(cast(float, run.engine_s))
    rows = [probe_features(probe, geometry).mean(axis=0) for probe in grouped]
    return np.array(rows), np.array([float(np.median(v)) for v in grouped.values()]), [p.name for p in grouped]


def fit_engine_spec(runs: Sequence[ProbeRun], geometry: EngineSpec) -> tuple[EngineSpec, LinearFit, list[dict[str, Any]]]:
    """The fitted spec (``geometry`` with a linear step-time model), the fit, and per probe
    the measured and predicted median (the residuals a reader can check).

    Where the engine reports its own time per request (``engine_side``) the step model is
    fitted to that, with nothing per request outside steps: the engine's time is made of
    steps, and a step that admits requests pays ``per_admitting_step_s``. Otherwise it is
    fitted to client latencies with a per-request intercept (the front end), and the
    admitting-step term is held at 0: in latencies seen from outside it is one more
    constant per request, which the intercept cannot be told apart from."""
    if engine_side(runs):
        features, targets, names = design_engine(runs, geometry)
        fit = fit_linear(features, targets, groups=names, fixed_zero=("request_overhead_s",))
    else:
        features, targets, names = design(runs, geometry)
        fit = fit_linear(features, targets, groups=names, fixed_zero=("per_admitting_step_s",))
    c = fit.coefficients
    step = StepTimeModel(**{name: float(c[name]) for name in STEP_FEATURES})  # type: ignore[arg-type]  # floats only
    predicted = predict(c, features)
    residuals = []
    for name in dict.fromkeys(names):
        mask = np.array([n == name for n in names])
        measured, model = float(np.median(targets[mask])), float(np.median(predicted[mask]))
        residuals.append({"probe": name, "measured_s": measured, "predicted_s": model,
                          "rel_error": (model - measured) / measured})
    return replace(geometry, step_time=step), fit, residuals


def frontend_from_runs(runs: Sequence[ProbeRun]) -> float | None:
    """Time outside the engine per request with the server to itself: the median over runs
    of single-request probes of client latency minus the engine's own time (HTTP, the API
    server's input and output processing, the hand-over to the engine core)."""
    gaps = [float(np.mean(run.latencies_s)) - run.engine_s for run in runs
            if run.probe.count == 1 and run.engine_s is not None]
    return max(0.0, float(np.median(gaps))) if gaps else None


def frontend_check(frontend_s: float, load: LoadProbe) -> dict[str, Any] | None:
    """What the front-end queue predicts for the load probe, against what it measured.

    The probe's clients send equal requests that the engine batches and finishes in
    the same step, so they reach the front end together: the k-th in line waits
    k - 1 services, and on average a request spends frontend_s * (clients + 1) / 2
    there. A check of the model, not a fit: nothing is tuned to match it."""
    if load.overhead_s is None:
        return None
    predicted = frontend_s * (load.clients + 1) / 2
    return {"predicted_s": predicted, "measured_s": load.overhead_s,
            "rel_error": (predicted - load.overhead_s) / load.overhead_s if load.overhead_s else None}


def build_profile(measured: Measurements, max_num_batched_tokens: int, max_num_seqs: int,
                  name: str | None = None, serving_flags: str | None = None,
                  admit_full_prompt: bool = True, engines: int = 1) -> dict[str, Any]:
    """A profile (``profile_to_dict``) plus a ``calibration`` record: engine version,
    serving flags, every measurement, the fit and its residuals.

    The scheduler limits and the admission rule are not observable over HTTP; they
    are the caller's (``thunder calibrate`` defaults to vLLM 0.32's on CPU)."""
    facts = measured.facts
    geometry = EngineSpec(name=name or f"{facts.model}-vllm-{facts.version}", num_blocks=facts.num_blocks,
                          block_size=facts.block_size, max_num_seqs=max_num_seqs,
                          max_num_batched_tokens=max_num_batched_tokens, step_time=StepTimeModel(),
                          admit_full_prompt=admit_full_prompt)
    spec, fit, residuals = fit_engine_spec(measured.runs, geometry)
    c = fit.coefficients
    load = measured.load
    # What one request costs the front end when it has it to itself: measured outside the
    # engine where the engine reports its own time, else the fit's per-request intercept.
    # The simulator queues requests there (EngineSpec.frontend_s).
    from_engine = engine_side(measured.runs)
    outside = frontend_from_runs(measured.runs) if from_engine else None
    frontend = outside if outside is not None else c["request_overhead_s"]
    check = frontend_check(frontend, load) if load is not None else None
    sources = {
        "engine": f"vLLM {facts.version}, model {facts.model}, max_model_len {facts.max_model_len}"
                  + (f"; {engines} identical engines measured at the same time" if engines > 1 else ""),
        "kv": f"vllm:cache_config_info: {facts.num_blocks} blocks x {facts.block_size} tokens = "
              f"{facts.capacity_tokens} tokens",
        "step_time": "thunder calibrate: non-negative least squares over "
                     + (f"{fit.rows} probes' mean engine time per request (vLLM's queue + inference histograms)"
                        if from_engine else f"{fit.rows} request latencies")
                     + f" ({len(measured.runs)} probe runs), R^2 {fit.r2:.3f}, median |relative error| "
                     f"{fit.median_abs_rel_error:.1%}"
                     + (f"; outlying probes left out: {', '.join(fit.excluded)}" if fit.excluded else ""),
        "frontend": (
            f"{frontend * 1e3:.1f} ms per request in one first-come-first-served front end: "
            + ("client latency minus the engine's own time, single requests" if outside is not None
               else "the fit's per-request intercept")
            + (f"; under load ({load.clients} closed-loop clients finishing together) that queue predicts "
               f"{check['predicted_s'] * 1e3:.1f} ms outside the engine, measured {check['measured_s'] * 1e3:.1f} ms"
               if check is not None and load is not None else "")),
        "scheduler": f"max_num_batched_tokens {max_num_batched_tokens}, max_num_seqs {max_num_seqs}, "
                     f"admission {'full prompt' if admit_full_prompt else 'first chunk'} "
                     "(given to thunder calibrate; not observable over HTTP)",
    }
    if serving_flags:
        sources["serving_flags"] = serving_flags
    profile = profile_to_dict(replace(spec, sources=sources, request_overhead_s=0.0, frontend_s=frontend))
    prefix = measured.prefix
    profile["calibration"] = {
        "engine_version": facts.version, "model": facts.model, "max_model_len": facts.max_model_len,
        "engines_measured_together": engines,
        "serving_flags": serving_flags, "cache_config_info": facts.cache_config,
        "fit": fit.to_dict(), "fit_target": "engine time per request" if from_engine else "client latency",
        "residuals": residuals, "probes": run_summary(measured.runs),
        "latencies_s": [{"probe": r.probe.name, "count": r.probe.count, "prompt_tokens": r.probe.prompt_tokens,
                         "output_tokens": r.probe.output_tokens, "latencies_s": [round(v, 5) for v in r.latencies_s],
                         "engine_s": None if r.engine_s is None else round(r.engine_s, 5)}
                        for r in measured.runs],
        "prefix_cache": {**asdict(prefix), "expected": prefix.expected(facts.block_size),
                         "matches_simulator": all(getattr(prefix, k) == v
                                                  for k, v in prefix.expected(facts.block_size).items())},
        "load_probe": None if load is None else {**asdict(load), "overhead_s": load.overhead_s},
        "frontend_check": check,
        "preemptions_while_probing": measured.preemptions, "cached_probe_tokens": measured.cached_probe_tokens,
        "seed": measured.seed, "duration_s": measured.duration_s,
    }
    return profile
