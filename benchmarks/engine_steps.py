#!/usr/bin/env python3
"""Every vLLM engine step timed, during a calibration and during live replays, against the
step model that calibration fits: where does a replay's engine time go?

    python benchmarks/engine_steps.py     # about 5 minutes on two cores

One vLLM (the fidelity benchmark's settings) started through ``vllm_step_trace.py``, which
logs each step's shape and duration. Phases, in order: a calibration (``thunder calibrate``'s
probes; its profile is the reference), live replays of the fidelity trace through
``thunder serve`` (``--cells``, default vllm and thunder at 16 parallel), a second
calibration. Per phase it reports:

- steps, the engine's busy seconds, and what the reference profile predicts for the same
  steps (``StepTimeModel.step_s`` on each step's own shape): the ratio says whether the step
  model under-charges replay steps;
- the same ratio by step shape (decode-only by batch size, steps with a prefill);
- the time between a step and the next when requests were still unfinished (engine-side
  input/output handling the step model does not charge), per step and in total;
- a step model fitted to the phase's own steps (non-negative least squares), to show which
  term moves;
- for a replay, the same replay simulated with each calibration's profile: duration, engine
  busy time and steps, against the live window and busy time.

``--pin-engine`` gives the engine core the last CPU to itself (``VllmServerConfig.engine_cpus``)
and keeps this process, the proxy and the replayer off it. ``--keep-steps FILE`` keeps the step
log (and the phase windows beside it) for a closer look. Prints JSON; ``--out`` keeps it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import fidelity  # noqa: E402
from thunder.core.probes import nnls  # noqa: E402
from thunder.policies.registry import make_policy  # noqa: E402
from thunder.runtime.engines.launcher import VllmServer, VllmServerConfig  # noqa: E402
from thunder.sim.presets import load_engine_spec  # noqa: E402
from thunder.sim.run import SimConfig, simulate  # noqa: E402
from thunder.sim.step_time import StepTimeModel  # noqa: E402

LAUNCHER = ROOT / "benchmarks" / "vllm_step_trace.py"
TERMS = ("overhead_s", "per_prefill_token_s", "per_decode_seq_s", "per_context_token_s", "per_prefill_pair_s",
         "per_admitting_step_s")


def load_steps(path: Path) -> np.ndarray:
    """Rows of [wall, seconds, prefill_tokens, pairs, decode_seqs, context, unfinished, joined,
    finished] (``vllm_step_trace.py``)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return np.array(rows, dtype=np.float64).reshape(-1, 9)


def predicted(model: StepTimeModel, steps: np.ndarray) -> np.ndarray:
    return np.array([model.step_s(int(s[2]), s[3], int(s[4]), int(s[5]), int(s[7])) for s in steps])


def design(steps: np.ndarray) -> np.ndarray:
    """Columns in TERMS order: 1, prefill tokens, decode seqs, context tokens, prefill pairs,
    whether the step admitted a request."""
    return np.column_stack([np.ones(len(steps)), steps[:, 2], steps[:, 4], steps[:, 5], steps[:, 3],
                            steps[:, 7] > 0])


def shape_classes(steps: np.ndarray) -> dict[str, np.ndarray]:
    decode_only = steps[:, 2] == 0
    batch = steps[:, 4]
    return {
        "decode 1-2": decode_only & (batch <= 2),
        "decode 3-8": decode_only & (batch > 2) & (batch <= 8),
        "decode 9+": decode_only & (batch > 8),
        "with prefill": ~decode_only,
    }


def describe_phase(steps: np.ndarray, model: StepTimeModel, window: tuple[float, float]) -> dict[str, Any]:
    inside = (steps[:, 0] >= window[0]) & (steps[:, 0] < window[1])
    phase = steps[inside]
    if len(phase) == 0:
        return {"steps": 0}
    model_s = predicted(model, phase)
    ends = phase[:, 0] + phase[:, 1]
    gaps = phase[1:, 0] - ends[:-1]
    busy_gaps = gaps[phase[:-1, 6] > 0]  # the next step was due at once
    by_shape = {}
    for name, mask in shape_classes(phase).items():
        if mask.any():
            ratio = phase[mask, 1] / model_s[mask]
            by_shape[name] = {"steps": int(mask.sum()), "measured_s": round(float(phase[mask, 1].sum()), 3),
                              "model_s": round(float(model_s[mask].sum()), 3),
                              "median_ratio": round(float(np.median(ratio)), 3)}
    coefficients = nnls(design(phase), phase[:, 1])
    fitted = design(phase) @ coefficients
    residual = phase[:, 1] - fitted
    r2 = 1 - float(residual @ residual) / float(((phase[:, 1] - phase[:, 1].mean()) ** 2).sum())
    return {
        "steps": int(len(phase)),
        "wall_s": round(window[1] - window[0], 2),
        "busy_s": round(float(phase[:, 1].sum()), 3),
        "model_s": round(float(model_s.sum()), 3),
        "busy_over_model": round(float(phase[:, 1].sum() / model_s.sum()), 3),
        "median_step_ratio": round(float(np.median(phase[:, 1] / model_s)), 3),
        "by_shape": by_shape,
        "gap_while_busy": {"count": int(len(busy_gaps)), "total_s": round(float(busy_gaps.sum()), 3),
                           "median_ms": round(float(np.median(busy_gaps)) * 1e3, 2) if len(busy_gaps) else None,
                           "p90_ms": round(float(np.percentile(busy_gaps, 90)) * 1e3, 2) if len(busy_gaps) else None},
        "fit": {**{term: float(f"{value:.4g}") for term, value in zip(TERMS, coefficients)}, "r2": round(r2, 3)},
        "mean_batch": round(float(phase[:, 4].mean()), 2),
        "mean_context": round(float(phase[:, 5].mean()), 1),
    }


def simulated(trace: list[Any], profile: dict[str, Any], policy: str, parallel: int, time_scale: float,
              work: Path) -> dict[str, Any]:
    """The same replay in the simulator with ``profile``: duration, engine busy time, steps."""
    path = work / f"{profile['name']}.json"
    path.write_text(json.dumps(profile))
    outcome = simulate(tuple(trace), make_policy(policy), load_engine_spec(str(path)),
                       SimConfig(parallel=parallel, tool_time_scale=time_scale), policy_name=policy)
    replica = outcome.cluster.replicas[0]
    finished = len(outcome.cluster.records.steps)
    return {"profile": profile["name"], "wall_s": round(outcome.end_s, 2),
            "busy_s": round(replica.counters.busy_s, 3), "steps": replica.counters.steps,
            "steps_per_min": round(finished / outcome.end_s * 60, 1)}


def model_from(profile: dict[str, Any]) -> StepTimeModel:
    return StepTimeModel(**{term: profile["step_time"].get(term, 0.0) for term in TERMS})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    fidelity.add_trace_arguments(parser)
    parser.add_argument("--cells", default="vllm:16,thunder:16", help="policy:parallel replays, in order")
    parser.add_argument("--calibration-repeats", type=int, default=5)
    parser.add_argument("--cell-timeout-s", type=float, default=180.0)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--pin-engine", action="store_true", help="the engine core on the last CPU alone")
    parser.add_argument("--keep-steps", type=Path, default=None, help="copy the step log (JSON lines) here, "
                        "with the phase windows in a .phases.json beside it")
    args = parser.parse_args()
    cells = [(c.split(":")[0], int(c.split(":")[1])) for c in args.cells.split(",") if c.strip()]
    windows: list[tuple[str, float, float]] = []
    profiles: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="thunder-steps-") as tmp:
        work = Path(tmp)
        trace = fidelity.write_scaled_trace(args, work / "trace.jsonl")
        model_dir = fidelity.build_model(work / "tiny-llama")
        trace_file = work / "steps.jsonl"
        cpus = sorted(os.sched_getaffinity(0))
        engine_cpus = tuple(cpus[-1:]) if args.pin_engine else ()
        config = VllmServerConfig(model_dir=model_dir, served_model_name="tiny-llama", log_path=work / "vllm.log",
                                  launcher=LAUNCHER, extra_env=(("THUNDER_STEP_TRACE", str(trace_file)),),
                                  engine_cpus=engine_cpus)
        with VllmServer(config) as server:
            urls = [server.url]
            pinned = "; ".join(f"{k} -> {v}" for k, v in server.placement.items()) or "not pinned"
            if engine_cpus:  # this process, and the proxy and replayer it starts, keep off the engine's CPU
                os.sched_setaffinity(0, set(cpus[:-1]) or set(cpus))
            print(f"  affinity: {pinned}", file=sys.stderr)

            def phase(name: str, run: Any) -> Any:
                start = time.time()
                value = run()
                windows.append((name, start, time.time()))
                print(f"  {name}: {windows[-1][2] - start:.0f} s", file=sys.stderr)
                return value

            profiles.append(phase("calibration-before", lambda: fidelity.calibrate(
                urls, config.describe(), "steps-before", args.calibration_repeats)))
            for seed, (policy, parallel) in enumerate(cells, start=1):
                summary = phase(f"replay-{policy}-x{parallel}", lambda: fidelity.live_cell(
                    urls, trace, policy, parallel, args.time_scale, seed=seed, work=work,
                    timeout_s=args.cell_timeout_s))
                windows[-1] = (*windows[-1], {k: summary[k] for k in ("steps_per_min", "kv_hit_rate",
                                                                      "engine_s_per_request")})
            profiles.append(phase("calibration-after", lambda: fidelity.calibrate(
                urls, config.describe(), "steps-after", args.calibration_repeats)))
        steps = load_steps(trace_file)
        if args.keep_steps:
            shutil.copyfile(trace_file, args.keep_steps)
            args.keep_steps.with_suffix(".phases.json").write_text(json.dumps([w[:3] for w in windows]))
    reference = model_from(profiles[0])
    result: dict[str, Any] = {
        "command": " ".join(["python benchmarks/engine_steps.py", *sys.argv[1:]]),
        "affinity": pinned,
        "reference_profile": {term: profiles[0]["step_time"].get(term, 0.0) for term in TERMS},
        "frontend_s": [p["frontend_s"] for p in profiles],
        "calibration_r2": [p["calibration"]["fit"]["r2"] for p in profiles],
        "phases": {},
    }
    for window in windows:
        name, start, end = window[:3]
        result["phases"][name] = describe_phase(steps, reference, (start, end))
        if len(window) > 3:
            result["phases"][name]["replay"] = window[3]
            policy, parallel = name.split("-")[1], int(name.split("-x")[1])
            with tempfile.TemporaryDirectory(prefix="thunder-steps-sim-") as tmp:
                result["phases"][name]["simulated"] = [simulated(trace, p, policy, parallel, args.time_scale, Path(tmp))
                                                       for p in profiles]
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
