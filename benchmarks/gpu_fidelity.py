"""The simulator against real GPU timings: SWE-agent on GLM-4.5-FP8, one 8x H200 node.

The recorded runs (``swe-agent-profile`` layout, 1 and 32 parallel workers) are
replayed closed loop at their recorded concurrency, in the order the batch
started them, with their recorded acting times, on the vLLM baseline policy:

* acting time between two calls = tool_execution + observation_packaging + the
  agent's own time between stages + any abandoned call ('reenter') before the
  next call, all as recorded: the real batch waited that long between calls;
* before its first call a worker spends env_prepare and the agent's setup.

Then, sim / real side by side per concurrency: TTFT, time per output token and
per-call LLM latency (median, p90, p99), the batch's makespan and steps/min.

Step-time models side by side: ``datasheet`` (the roofline of the datasheet numbers
alone, as the other GPU presets are), ``fitted here`` (its free coefficients fitted on
the 1-worker runs only, by this script), the bundled preset ``8xh200-glm45`` (the same
fit, rounded, in ``thunder/sim/h200_glm45.py``) and ``fitted here, inferred tokens``
(the fit, replaying the calls whose decode outlasts their recorded tokens with the
tokens their time holds: a diagnostic of the workload that reads real timings). The
fit runs the 1-worker trace through the simulated engine with a clock that records
each step's features (as ``thunder calibrate`` does), then non-negative least squares
on relative error, at each weight-streaming rate of a grid (the roofline is not linear
in it), keeping the best:

    TTFT = frontend_s + frontend_per_prompt_token_s * prompt + sum over its prefill steps of
           (overhead_s + per_prefill_token_s * tokens + per_prefill_pair_s * pairs + roofline)
    decode time = finish_s + sum over its decode steps of (overhead_s + per_context_token_s * context
                  + roofline)

Last, how the 32-worker prediction moves across the weight-streaming rates the 1-worker
fit cannot tell apart (the sensitivity table).

    python benchmarks/gpu_fidelity.py [RUNS_DIR] [--small] [--json OUT]

RUNS_DIR holds ``bs1/`` and ``bs32/`` (default ``../shared/data/agent-runs/swe-agent-glm45-h200``
relative to the repository); ``--small`` uses the test fixtures (two and three runs) and
takes a few seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence, cast

import numpy as np

from thunder.core.probes import nnls
from thunder.policies.registry import make_policy
from thunder.sim.fit_profile import _FeatureClock  # the feature-recording clock thunder calibrate fits with
from thunder.sim.h200_glm45 import glm45_h200_datasheet
from thunder.sim.presets import load_engine_spec
from thunder.sim.run import SimConfig, simulate
from thunder.sim.step_time import MBU, EngineSpec, StepTimeModel
from thunder.traces import EnvSpec, TraceProgram
from thunder.traces.converters import ConvertOptions
from thunder.traces.converters.profile_runs import ProfileRun
from thunder.traces.converters.report import ReportBuilder
from thunder.traces.converters.swe_agent_profile import convert, read_runs

REPO = Path(__file__).resolve().parents[1]
DEFAULT_RUNS = REPO / ".." / "shared" / "data" / "agent-runs" / "swe-agent-glm45-h200"
SMALL_RUNS = REPO / "tests" / "fixtures" / "swe-agent-profile"
BATCHES = (("bs1", 1), ("bs32", 32))
PRESET = "8xh200-glm45"
FIT_TERMS = ("frontend_s", "frontend_per_prompt_token_s", "overhead_s", "per_prefill_token_s",
             "per_context_token_s", "per_prefill_pair_s", "finish_s")
OUTLIER = 1.0  # a call measured over twice the fit's prediction is left out of the next round
# Candidate usable fractions of HBM bandwidth for streaming weights (the KV keeps the preset's MBU):
# a grid, since the step's roofline is not linear in it; NNLS fits the linear terms at each.
WEIGHT_EFFICIENCIES = tuple(float(v) for v in np.round(np.geomspace(0.02, 0.7, 37), 4))
FRONT_END_TERMS = ("frontend_s", "frontend_per_prompt_token_s", "finish_s")  # EngineSpec, not the step model


@dataclass(frozen=True, slots=True)
class Batch:
    name: str
    workers: int
    runs: tuple[ProfileRun, ...]
    programs: tuple[TraceProgram, ...]  # the converted trace, in start order

    def replay(self, outputs: dict[tuple[str, int], int] | None = None) -> tuple[TraceProgram, ...]:
        """The programs with every recorded wait between calls as acting time (see the docstring);
        ``outputs`` replaces the output tokens of the (program, step) it names."""
        out = []
        for run, program in zip(self.runs, self.programs, strict=True):
            if outputs:
                program = replace(program, steps=tuple(
                    replace(t, output_tokens=outputs.get((program.program_id, i), t.output_tokens))
                    for i, t in enumerate(program.steps)))
            steps = run.steps
            acting = [(s.tool_s or 0.0) + s.agent_s + (sum(steps[i + 1].hidden_calls_s) if i + 1 < len(steps) else 0)
                      for i, s in enumerate(steps)]
            setup = (run.env_prepare_s or 0.0) + run.before_first_call_s + sum(steps[0].hidden_calls_s)
            out.append(replace(program, env=EnvSpec(setup_s=setup),
                               steps=tuple(replace(t, tool_s=a) for t, a in zip(program.steps, acting))))
        return tuple(out)


def load_batches(root: Path) -> list[Batch]:
    batches = []
    for name, workers in BATCHES:
        folder = root / name
        if not folder.is_dir():
            raise SystemExit(f"{folder}: no such folder (give the folder that holds bs1/ and bs32/)")
        runs = read_runs(folder, ReportBuilder())
        _, programs, report = convert(folder, ConvertOptions())
        if report.skipped:
            raise SystemExit(f"{folder}: runs skipped: {report.skipped}")
        assert [r.instance_id for r in runs] == [p.program_id for p in programs]
        batches.append(Batch(name, workers, tuple(runs), tuple(programs)))
    return batches


# -- the real side -------------------------------------------------------------------


def real_metrics(batch: Batch) -> dict[str, Any]:
    calls = [s.call for run in batch.runs for s in run.steps]
    makespan = max(r.ended_s for r in batch.runs) - min(r.started_s for r in batch.runs)
    return _metrics([c.ttft_s for c in calls], [t for c in calls if (t := c.tpot_s) is not None],
                    [c.llm_s for c in calls], makespan, len(calls))


def _metrics(ttft: Sequence[float], tpot: Sequence[float], llm: Sequence[float], makespan_s: float,
             steps: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, values in (("ttft_s", ttft), ("tpot_s", tpot), ("llm_latency_s", llm)):
        p50, p90, p99 = np.percentile(np.asarray(values, dtype=float), [50, 90, 99])
        out[name] = {"p50": float(p50), "p90": float(p90), "p99": float(p99)}
    out["makespan_s"] = makespan_s
    out["steps_per_min"] = steps / makespan_s * 60
    out["steps"] = steps
    return out


# -- the simulated side --------------------------------------------------------------


def simulated_metrics(batch: Batch, spec: EngineSpec,
                      outputs: dict[tuple[str, int], int] | None = None) -> dict[str, Any]:
    """The replay's metrics; TPOT per recorded output token, as the real side counts it."""
    config = SimConfig(parallel=batch.workers, env_setup=True)
    outcome = simulate(batch.replay(outputs), make_policy("vllm"), spec, config, policy_name="vllm")
    rows = outcome.cluster.records.steps
    counted = {(p.program_id, i): t.output_tokens for p in batch.programs for i, t in enumerate(p.steps)}
    ttft = [r["first_token_s"] - r["dispatched_s"] for r in rows]
    tpot = [(r["done_s"] - r["first_token_s"]) / (n - 1) for r in rows
            if (n := counted[(r["program_id"].split("#")[0], r["step"])]) > 1]
    llm = [r["done_s"] - r["ready_s"] for r in rows]
    return _metrics(ttft, tpot, llm, outcome.end_s, len(rows))


# -- the fit (1-worker runs only) ------------------------------------------------------


def fit_coefficients(batch: Batch, datasheet: EngineSpec) -> tuple[dict[str, float], dict[str, Any]]:
    """The free coefficients from one-worker runs, and the fit's quality (median |relative error| on
    TTFT and decode time, the calls left out)."""
    if batch.workers != 1:
        raise ValueError("the fit reads each call's steps alone: one worker only")
    clock = _FeatureClock()
    geometry = replace(datasheet, step_time=cast(StepTimeModel, clock), frontend_s=0.0,
                       frontend_per_prompt_token_s=0.0)
    outcome = simulate(batch.programs, make_policy("vllm"), geometry,
                       SimConfig(parallel=1, tool_time_scale=0.0), policy_name="vllm")
    rows = np.array(clock.rows)  # each step lasts 1 s: row i is the step over [i, i + 1)
    calls = {(r.instance_id, i): s.call for r in batch.runs for i, s in enumerate(r.steps)}
    spans = []  # per call: (its record's calls entry, prefill rows, decode rows)
    for rec in outcome.cluster.records.steps:
        first, admitted, done = (int(round(rec[k])) for k in ("first_token_s", "admitted_s", "done_s"))
        spans.append((calls[(rec["program_id"], rec["step"])], slice(admitted, first), slice(first, done)))
    peak = datasheet.step_time.bytes_per_s / MBU
    grid = []
    for efficiency in WEIGHT_EFFICIENCIES:
        roof = _roofline(datasheet.step_time, rows, peak * efficiency)
        coefficients, quality, loss = _fit_linear_part(spans, rows, roof)
        grid.append((loss, efficiency, {**coefficients, "weight_bytes_per_s": peak * efficiency}, quality))
    loss, efficiency, best, quality = min(grid, key=lambda g: g[0])
    # How well one worker's calls pin the weight-streaming rate down: every efficiency whose
    # loss is within 10% of the best fits about as well (the sensitivity rows of the report).
    near = [(e, c) for l, e, c, _ in grid if l <= 1.1 * loss]
    return best, {**quality, "weight_efficiency": efficiency, "loss": loss,
                  "near_best": [{"weight_efficiency": e, "coefficients": c} for e, c in near],
                  "fastest_prefill_bound": _fastest_prefill_bound(spans, rows, datasheet, peak)}


def _fastest_prefill_bound(spans: list[tuple[Any, slice, slice]], rows: np.ndarray, datasheet: EngineSpec,
                           peak_bytes_per_s: float) -> float:
    """The lowest weight-streaming efficiency the fastest first tokens allow: a call's TTFT
    holds at least its prefill steps' expert reads."""
    model = datasheet.step_time.model
    assert model is not None
    bound = 0.0
    for call, pre_span, _ in spans:
        pre = rows[pre_span]
        weights = sum(model.weight_bytes_read(float(p + d)) for p, d in zip(pre[:, 1], pre[:, 2]))
        bound = max(bound, weights / call.ttft_s / peak_bytes_per_s)
    return bound


def _fit_linear_part(spans: list[tuple[Any, slice, slice]], rows: np.ndarray,
                     roof: np.ndarray) -> tuple[dict[str, float], dict[str, Any], float]:
    """NNLS for the linear terms given each step's roofline time; returns them, the quality and
    the loss (weighted squared error over the calls kept)."""
    design, target, real = [], [], []
    for call, pre_span, dec_span in spans:
        pre = rows[pre_span]
        # frontend_s, per prompt token, overhead, prefill tokens, context, pairs, finish_s
        design.append([1.0, call.input_tokens, len(pre), pre[:, 1].sum(), pre[:, 3].sum(), pre[:, 4].sum(), 0.0])
        target.append(call.ttft_s - roof[pre_span].sum())
        real.append(call.ttft_s)
        dec = rows[dec_span]
        if len(dec):  # the decode steps after the first token, then the finish
            design.append([0.0, 0.0, len(dec), 0.0, dec[:, 3].sum(), 0.0, 1.0])
            target.append(call.decode_s - roof[dec_span].sum())
            real.append(call.decode_s)
    a, b, measured = np.array(design), np.array(target), np.array(real)
    weight = 1.0 / np.maximum(measured, 1e-3)  # relative error: TTFT and decode time differ tenfold
    keep = np.ones(len(b), dtype=bool)
    for _ in range(3):
        x = nnls(a[keep] * weight[keep, None], b[keep] * weight[keep])
        # Some calls decode far longer than their recorded output tokens can take (up to 0.29 s per
        # token with the GPU to themselves): tokens the count leaves out (GLM-4.5's thinking, we
        # assume). Fit to the calls whose tokens account for their time; report how many are left out.
        predicted = measured - (b - a @ x)
        keep = measured <= (1 + OUTLIER) * predicted
    is_ttft = a[:, 0] == 1.0
    error = np.abs(a @ x - b) / measured
    left_out = ~keep & ~is_ttft
    quality: dict[str, Any] = {
        "decode_left_out": int(left_out.sum()), "ttft_left_out": int((~keep & is_ttft).sum()),
        "left_out_excess_s": float(np.sum((b - a @ x)[left_out])),
        "ttft_median_abs_rel_error": float(np.median(error[is_ttft])),
        "decode_median_abs_rel_error": float(np.median(error[~is_ttft & keep])), "calls": int(is_ttft.sum())}
    # Truncated squared relative error over every call: comparable across the grid whatever it leaves out.
    loss = float(np.sum(np.minimum(error, OUTLIER) ** 2))
    return dict(zip(FIT_TERMS, (float(v) for v in x))), quality, loss


def _roofline(step: StepTimeModel, rows: np.ndarray, weight_bytes_per_s: float) -> np.ndarray:
    """The roofline part of each recorded step (the linear terms are what the fit finds), with
    weights streamed at ``weight_bytes_per_s`` and KV at the preset's rate."""
    model = step.model
    assert model is not None
    prefill, decode, context, pairs = rows[:, 1], rows[:, 2], rows[:, 3], rows[:, 4]
    batch = prefill + decode
    weights = np.array([model.weight_bytes_read(float(n)) for n in batch])
    flops = 2.0 * model.active_params * batch + 4.0 * model.layers * model.attention_heads * model.head_dim * (
        pairs + context)
    memory = weights / weight_bytes_per_s + model.kv_bytes_per_token * (context + prefill) / step.bytes_per_s
    return np.maximum(flops / step.flops_per_s, memory)


def with_fit(datasheet: EngineSpec, fit: dict[str, float]) -> EngineSpec:
    step = replace(datasheet.step_time, **{k: v for k, v in fit.items() if k not in FRONT_END_TERMS})
    return replace(datasheet, step_time=step, **{k: fit[k] for k in FRONT_END_TERMS})


# -- the report -------------------------------------------------------------------


ROWS = [("TTFT p50, s", "ttft_s", "p50"), ("TTFT p90, s", "ttft_s", "p90"), ("TTFT p99, s", "ttft_s", "p99"),
        ("TPOT p50, ms", "tpot_s", "p50"), ("TPOT p90, ms", "tpot_s", "p90"), ("TPOT p99, ms", "tpot_s", "p99"),
        ("LLM latency p50, s", "llm_latency_s", "p50"), ("LLM latency p90, s", "llm_latency_s", "p90"),
        ("LLM latency p99, s", "llm_latency_s", "p99"), ("makespan, s", "makespan_s", None),
        ("steps/min", "steps_per_min", None)]


def _value(m: dict[str, Any], key: str, quantile: str | None) -> float:
    value = float(m[key][quantile] if quantile else m[key])
    return value * 1e3 if key == "tpot_s" else value


def render(results: dict[str, Any]) -> str:
    lines = []
    models = list(results["models"])
    for batch in results["batches"]:
        name, real = batch["name"], batch["real"]
        lines.append(f"\n{name}: {batch['workers']} parallel, {real['steps']} calls, {batch['runs']} runs")
        header = "| metric | real | " + " | ".join(f"sim: {m} | err" for m in models) + " |"
        lines += [header, "|---|---:|" + "---:|---:|" * len(models)]
        for label, key, quantile in ROWS:
            r = _value(real, key, quantile)
            cells = []
            for model in models:
                s = _value(batch["sim"][model], key, quantile)
                cells.append(f"{s:.3g} | {(s - r) / r:+.0%}")
            lines.append(f"| {label} | {r:.3g} | " + " | ".join(cells) + " |")
    fit = results["fit"]
    lines.append("\nfitted on bs1: " + ", ".join(f"{k} {v:.4g}" for k, v in fit["coefficients"].items())
                 + f"; weights streamed at {fit['quality']['weight_efficiency']:.1%} of HBM bandwidth"
                 + f"; median |rel. error| TTFT {fit['quality']['ttft_median_abs_rel_error']:.1%}, "
                   f"decode time {fit['quality']['decode_median_abs_rel_error']:.1%} over {fit['quality']['calls']} calls; "
                   f"left out: {fit['quality']['decode_left_out']} decode times (their time beyond the fit: "
                   f"{fit['quality']['left_out_excess_s']:.0f} s), {fit['quality']['ttft_left_out']} TTFTs")
    real = results["batches"][-1]["real"]
    q = fit["quality"]
    lines.append(f"\none worker's calls fit about as well (loss within 10% of the best) with weights streamed at "
                 f"{q['near_best'][0]['weight_efficiency']:.1%} to {q['near_best'][-1]['weight_efficiency']:.1%} "
                 f"of HBM bandwidth; the fastest first token allows no less than "
                 f"{q['fastest_prefill_bound']:.1%}. {results['batches'][-1]['name']} under each:")
    lines += ["| weight efficiency | TPOT p50, ms | err | steps/min | err | with inferred tokens: TPOT p50, ms "
              "| err | steps/min | err |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in results["sensitivity"]:
        cells = [f"{row['weight_efficiency']:.1%}"]
        for tpot, rate in ((row["tpot_p50_s"], row["steps_per_min"]),
                           (row["inferred_tpot_p50_s"], row["inferred_steps_per_min"])):
            cells += [f"{tpot * 1e3:.3g}", f"{(tpot - real['tpot_s']['p50']) / real['tpot_s']['p50']:+.0%}",
                      f"{rate:.3g}", f"{(rate - real['steps_per_min']) / real['steps_per_min']:+.0%}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(root: Path) -> dict[str, Any]:
    batches = load_batches(root)
    datasheet = glm45_h200_datasheet()
    fit, quality = fit_coefficients(batches[0], datasheet)
    models = {"datasheet": datasheet, "fitted here": with_fit(datasheet, fit), PRESET: load_engine_spec(PRESET)}
    out: dict[str, Any] = {"runs_dir": root.name, "models": list(models),
                           "fit": {"on": batches[0].name, "coefficients": fit, "quality": quality}, "batches": []}
    for batch in batches:
        out["batches"].append({"name": batch.name, "workers": batch.workers, "runs": len(batch.runs),
                               "real": real_metrics(batch),
                               "sim": {name: simulated_metrics(batch, spec) for name, spec in models.items()}})
    fitted = models["fitted here"]
    for entry, batch in zip(out["batches"], batches):
        outputs = inferred_outputs(batch, fitted)
        counted = sum(t.output_tokens for p in batch.programs for t in p.steps)
        entry["inferred"] = {"calls": len(outputs), "counted_output_tokens": counted,
                             "inferred_output_tokens": counted + _added(batch, outputs)}
        entry["sim"]["fitted here, inferred tokens"] = simulated_metrics(batch, fitted, outputs)
    out["models"].append("fitted here, inferred tokens")
    out["sensitivity"] = sensitivity(batches[-1], datasheet, quality["near_best"])
    return out


def inferred_outputs(batch: Batch, spec: EngineSpec) -> dict[tuple[str, int], int]:
    """Output tokens for the calls whose decode took over twice what their recorded tokens allow.

    A diagnostic of the workload, not a prediction: it reads the real timings. The time per
    token a call should have had is the median of the calls decoding alongside it (their own
    recorded TPOT after the finish delay), or with one worker the model's one-sequence step; a
    call that decoded for more than twice that per recorded token is given the tokens its
    decode time holds at that rate. Needs the calls' first_chunk_timestamp with more than one worker."""
    calls = [(run.instance_id, i, s.call, run.steps[i]) for run in batch.runs for i, s in enumerate(run.steps)]
    finish = spec.finish_s
    per_token = np.array([max(c.decode_s - finish, 0.0) / max(c.output_tokens - 1, 1) for _, _, c, _ in calls])
    windows = np.array([(c.first_chunk_at_s or 0.0, (c.first_chunk_at_s or 0.0) + c.decode_s)
                        for _, _, c, _ in calls])
    inferred: dict[tuple[str, int], int] = {}
    for k, (program_id, step, call, _) in enumerate(calls):
        if call.output_tokens < 2:
            continue
        if batch.workers == 1:
            reference = spec.step_time.step_s(0, 0.0, 1, call.input_tokens)
        else:
            if call.first_chunk_at_s is None:
                raise ValueError(f"{program_id} step {step}: no first_chunk_timestamp to place the call in time")
            start, end = windows[k]
            overlap = (windows[:, 0] < end) & (windows[:, 1] > start)
            reference = float(np.median(per_token[overlap]))
        if per_token[k] > (1 + OUTLIER) * reference:
            inferred[(program_id, step)] = int(round(max(call.decode_s - finish, 0.0) / reference)) + 1
    return inferred


def _added(batch: Batch, outputs: dict[tuple[str, int], int]) -> int:
    recorded = {(p.program_id, i): t.output_tokens for p in batch.programs for i, t in enumerate(p.steps)}
    return sum(n - recorded[key] for key, n in outputs.items())


def sensitivity(batch: Batch, datasheet: EngineSpec, near_best: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The last batch's TPOT and steps/min under each weight-streaming efficiency the one-worker
    fit cannot tell from the best (about every third, and the ends)."""
    picks = near_best[::3] + ([near_best[-1]] if (len(near_best) - 1) % 3 else [])
    rows = []
    for pick in picks:
        spec = with_fit(datasheet, pick["coefficients"])
        sim = simulated_metrics(batch, spec)
        inferred = simulated_metrics(batch, spec, inferred_outputs(batch, spec))
        rows.append({"weight_efficiency": pick["weight_efficiency"], "tpot_p50_s": sim["tpot_s"]["p50"],
                     "steps_per_min": sim["steps_per_min"], "inferred_tpot_p50_s": inferred["tpot_s"]["p50"],
                     "inferred_steps_per_min": inferred["steps_per_min"]})
    return rows


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs_dir", nargs="?", type=Path, default=None,
                        help="folder with bs1/ and bs32/ (default: ../shared/data/agent-runs/swe-agent-glm45-h200)")
    parser.add_argument("--small", action="store_true", help="the test fixtures: a few seconds, for CI")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    root = SMALL_RUNS if args.small else (args.runs_dir or DEFAULT_RUNS)
    if not root.is_dir():
        raise SystemExit(f"{root}: no such folder; give the recorded runs' folder (it holds bs1/ and bs32/) "
                         "or --small")
    results = run(root.resolve())
    print(render(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
