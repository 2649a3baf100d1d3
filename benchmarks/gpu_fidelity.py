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

Three step-time models: ``datasheet`` (the roofline of the preset's datasheet
numbers alone, as the other GPU presets are), ``fitted here`` (the preset's
free coefficients fitted on the 1-worker runs only, by this script) and the
bundled preset ``8xh200-glm45`` (the same fit, written into
``thunder/sim/hardware.py``). The fit runs the 1-worker trace through the
simulated engine with a clock that records each step's features (as
``thunder calibrate`` does), then non-negative least squares on relative error:

    TTFT = frontend_s + frontend_per_prompt_token_s * prompt + sum over its prefill steps of
           (overhead_s + per_prefill_token_s * tokens + per_prefill_pair_s * pairs + roofline)
    decode time = finish_s + sum over its decode steps of (overhead_s + per_context_token_s * context
                  + roofline)

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

from thunder.calibration import nnls
from thunder.converters import ConvertOptions
from thunder.converters.profile_runs import ProfileRun
from thunder.converters.report import ReportBuilder
from thunder.converters.swe_agent_profile import convert, read_runs
from thunder.policies.registry import make_policy
from thunder.sim.calibration import _FeatureClock  # the feature-recording clock thunder calibrate fits with
from thunder.sim.hardware import EngineSpec, StepTimeModel, glm45_h200_datasheet, load_engine_spec
from thunder.sim.run import SimConfig, simulate
from thunder.trace import EnvSpec, TraceProgram

REPO = Path(__file__).resolve().parents[1]
DEFAULT_RUNS = REPO / ".." / "shared" / "data" / "agent-runs" / "swe-agent-glm45-h200"
SMALL_RUNS = REPO / "tests" / "fixtures" / "swe-agent-profile"
BATCHES = (("bs1", 1), ("bs32", 32))
PRESET = "8xh200-glm45"
FIT_TERMS = ("frontend_s", "frontend_per_prompt_token_s", "overhead_s", "per_prefill_token_s",
             "per_context_token_s", "per_prefill_pair_s", "finish_s")
OUTLIER = 1.0  # a call measured over twice the fit's prediction is left out of the next round
FRONT_END_TERMS = ("frontend_s", "frontend_per_prompt_token_s", "finish_s")  # EngineSpec, not the step model


@dataclass(frozen=True, slots=True)
class Batch:
    name: str
    workers: int
    runs: tuple[ProfileRun, ...]
    programs: tuple[TraceProgram, ...]  # the converted trace, in start order

    def replay(self) -> tuple[TraceProgram, ...]:
        """The programs with every recorded wait between calls as acting time (see the docstring)."""
        out = []
        for run, program in zip(self.runs, self.programs, strict=True):
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


def simulated_metrics(batch: Batch, spec: EngineSpec) -> dict[str, Any]:
    config = SimConfig(parallel=batch.workers, env_setup=True)
    outcome = simulate(batch.replay(), make_policy("vllm"), spec, config, policy_name="vllm")
    rows = outcome.cluster.records.steps
    ttft = [r["first_token_s"] - r["dispatched_s"] for r in rows]
    tpot = [(r["done_s"] - r["first_token_s"]) / (r["output_tokens"] - 1) for r in rows if r["output_tokens"] > 1]
    llm = [r["done_s"] - r["ready_s"] for r in rows]
    return _metrics(ttft, tpot, llm, outcome.end_s, len(rows))


# -- the fit (1-worker runs only) ------------------------------------------------------


def fit_coefficients(batch: Batch, datasheet: EngineSpec) -> tuple[dict[str, float], dict[str, float]]:
    """The free coefficients from one-worker runs, and the fit's median |relative error| on TTFT and
    decode time."""
    if batch.workers != 1:
        raise ValueError("the fit reads each call's steps alone: one worker only")
    clock = _FeatureClock()
    geometry = replace(datasheet, step_time=cast(StepTimeModel, clock), frontend_s=0.0,
                       frontend_per_prompt_token_s=0.0)
    outcome = simulate(batch.programs, make_policy("vllm"), geometry,
                       SimConfig(parallel=1, tool_time_scale=0.0), policy_name="vllm")
    rows = np.array(clock.rows)  # each step lasts 1 s: row i is the step over [i, i + 1)
    roof = np.array([_roofline(datasheet.step_time, r) for r in rows])
    calls = {(r.instance_id, i): s.call for r in batch.runs for i, s in enumerate(r.steps)}
    design, target, real = [], [], []
    for rec in outcome.cluster.records.steps:
        call = calls[(rec["program_id"], rec["step"])]
        first, admitted, done = (int(round(rec[k])) for k in ("first_token_s", "admitted_s", "done_s"))
        pre = rows[admitted:first]
        # frontend_s, per prompt token, overhead, prefill tokens, context, pairs, finish_s
        design.append([1.0, call.input_tokens, len(pre), pre[:, 1].sum(), pre[:, 3].sum(), pre[:, 4].sum(), 0.0])
        target.append(call.ttft_s - roof[admitted:first].sum())
        real.append(call.ttft_s)
        if done > first:  # the decode steps after the first token, then the finish
            dec = rows[first:done]
            design.append([0.0, 0.0, len(dec), 0.0, dec[:, 3].sum(), 0.0, 1.0])
            target.append(call.decode_s - roof[first:done].sum())
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
    excess = float(np.sum((b - a @ x)[left_out]))
    quality: dict[str, float | int] = {"decode_left_out": int(left_out.sum()), "ttft_left_out": int((~keep & is_ttft).sum()),
               "left_out_excess_s": excess,
                                       "ttft_median_abs_rel_error": float(np.median(error[is_ttft])),
               "decode_median_abs_rel_error": float(np.median(error[~is_ttft & keep])), "calls": int(is_ttft.sum())}
    return dict(zip(FIT_TERMS, (float(v) for v in x))), quality


def _roofline(step: StepTimeModel, row: np.ndarray) -> float:
    """The preset's roofline part of one recorded step (its linear terms are what the fit finds)."""
    _, prefill, decode, context, pairs, _ = row
    bare = StepTimeModel(flops_per_s=step.flops_per_s, bytes_per_s=step.bytes_per_s, model=step.model)
    return bare.step_s(int(prefill), float(pairs), int(decode), int(context))


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
                 + f"; median |rel. error| TTFT {fit['quality']['ttft_median_abs_rel_error']:.1%}, "
                   f"decode time {fit['quality']['decode_median_abs_rel_error']:.1%} over {fit['quality']['calls']} calls; "
                   f"left out: {fit['quality']['decode_left_out']} decode times (their time beyond the fit: "
                   f"{fit['quality']['left_out_excess_s']:.0f} s), {fit['quality']['ttft_left_out']} TTFTs")
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
    return out


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
