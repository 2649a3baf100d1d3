"""Fit the ``coding`` synthetic workload to real mini-swe-agent SWE-bench runs.

Usage::

    python benchmarks/fit_coding_workload.py RUNS_DIR

``RUNS_DIR`` is the folder of the public mini-swe-agent SWE-bench runs
(deepseek-chat, SWE-bench test instances 1-100), one ``<id>/<id>.traj.json``
per run. The script prints, for every distribution the generator draws from,
the sample size, the mean, a lognormal fit (median and sigma of the logs) and
an empirical quantile table at ``thunder.traces.synth.coding.QUANTILE_PROBS``. The
tables are what ``thunder/traces/synth/coding.py`` hard-codes; the lognormal fits are
printed to show why tables were chosen (they miss the bimodal context growth).

What is measured (one step = one assistant message):
- steps per run: assistant messages per run;
- initial prompt: ``usage.prompt_tokens`` of a run's first step;
- context growth: ``prompt_k - (prompt_{k-1} + output_{k-1})``, the tokens of
  the tool result and template text the agent appended between two calls;
- output tokens: ``usage.completion_tokens``;
- tool time: the timestamp of the tool message that answers a step minus the
  step's own timestamp (written when the response arrived). Negative values
  (clock skew between the two writers) are dropped and counted;
- shared prefix: the provider's ``cached_tokens`` on each run's first call.
  Nothing but the tool schema and system prompt can be shared by different
  tasks on their first call, so its mode is the cross-program shared prefix.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from thunder.traces.synth.coding import QUANTILE_PROBS


@dataclass(frozen=True, slots=True)
class RunSteps:
    """Per-step numbers of one run, in order."""

    prompt_tokens: list[int]
    output_tokens: list[int]
    tool_s: list[float | None]
    first_cached_tokens: int | None


def read_run(path: Path) -> RunSteps:
    messages = json.loads(path.read_text(encoding="utf-8"))["messages"]
    prompts: list[int] = []
    outputs: list[int] = []
    tools: list[float | None] = []
    first_cached: int | None = None
    for index, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        extra = message["extra"]
        usage = extra["response"]["usage"]
        if not prompts:
            first_cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
        prompts.append(usage["prompt_tokens"])
        outputs.append(usage["completion_tokens"])
        tools.append(_tool_seconds(messages, index, extra["timestamp"]))
    return RunSteps(prompts, outputs, tools, first_cached)


def _tool_seconds(messages: list[dict], index: int, step_ts: float) -> float | None:
    """Time until the last tool message before the next assistant message."""
    last: float | None = None
    for message in messages[index + 1:]:
        if message.get("role") == "assistant":
            break
        if message.get("role") == "tool":
            last = message["extra"]["timestamp"]
    return None if last is None else last - step_ts


def fit(values: np.ndarray) -> dict:
    """Summary, lognormal fit (of the positive values) and quantile table of one sample."""
    logs = np.log(values[values > 0])
    return {
        "n": int(values.size),
        "mean": float(values.mean()),
        "lognormal_median": float(np.exp(logs.mean())),
        "lognormal_sigma": float(logs.std()),
        "quantiles": [round(float(v), 3) for v in np.quantile(values, QUANTILE_PROBS)],
    }


def render(name: str, unit: str, result: dict) -> str:
    lines = [f"{name} ({unit}), n={result['n']}, mean={result['mean']:.3f}",
             f"  lognormal fit: median={result['lognormal_median']:.3f} "
             f"sigma={result['lognormal_sigma']:.3f}",
             "  quantiles: " + ", ".join(f"p{p * 100:g}={v:g}"
                                         for p, v in zip(QUANTILE_PROBS, result["quantiles"]))]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_dir", type=Path, help="folder of <id>/<id>.traj.json runs")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    args = parser.parse_args(argv)
    paths = sorted(args.runs_dir.glob("*/*.traj.json"))
    if not paths:
        print(f"no */*.traj.json under {args.runs_dir}", file=sys.stderr)
        return 2
    runs = [read_run(p) for p in paths]
    steps = np.array([len(r.prompt_tokens) for r in runs], dtype=float)
    initial = np.array([r.prompt_tokens[0] for r in runs], dtype=float)
    outputs = np.concatenate([r.output_tokens for r in runs]).astype(float)
    prompts = np.concatenate([r.prompt_tokens for r in runs]).astype(float)
    growth = np.concatenate([
        np.diff(r.prompt_tokens) - np.array(r.output_tokens[:-1]) for r in runs]).astype(float)
    raw_tool = np.array([t for r in runs for t in r.tool_s if t is not None])
    tool = raw_tool[raw_tool >= 0]
    cached = Counter(r.first_cached_tokens for r in runs)
    shared_prefix, shared_runs = cached.most_common(1)[0]

    samples = {
        "steps_per_run": ("steps per run", "steps", steps),
        "initial_prompt_tokens": ("initial prompt", "tokens", initial),
        "context_growth_tokens": ("context growth beyond output", "tokens", growth),
        "output_tokens": ("output tokens", "tokens", outputs),
        "tool_s": ("tool time", "s", tool),
        "prompt_tokens": ("prompt tokens, all steps (a check, not drawn)", "tokens", prompts),
    }
    fits: dict = {key: fit(values) for key, (_, _, values) in samples.items()}
    fits["shared_prefix_tokens"] = shared_prefix
    if args.json:
        print(json.dumps(fits, indent=1))
        return 0
    print(f"runs={len(runs)} steps={int(steps.sum())} "
          f"steps without a tool message={sum(t is None for r in runs for t in r.tool_s)} "
          f"negative tool times dropped={int((raw_tool < 0).sum())}")
    print(f"shared prefix: {shared_prefix} cached tokens on the first call of "
          f"{shared_runs}/{len(runs)} runs")
    for key, (name, unit, _) in samples.items():
        print("\n" + render(name, unit, fits[key]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
