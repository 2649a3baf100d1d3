"""The ``coding`` workload: a mini-swe-agent-like bash agent on SWE-bench.

Fitted to the public mini-swe-agent SWE-bench runs (deepseek-chat, 99 runs,
7,924 steps), see benchmarks/fit_coding_workload.py, which prints every table
below from the runs. Tables, not lognormal fits: context growth is bimodal
(a ~30-token template wrapper for short command outputs, then a long tail of
file dumps) and tool time is a tight ~0.26 s cluster with a tail out to the
agent's 60 s timeout; lognormal fits miss both.

Steps, outputs, growth and tool times are drawn independently (per-step draws
carry no memory of the run); the real runs' pooled per-step distributions are
matched, per-run correlations are not modelled.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from thunder.traces.synth.distributions import Choice, LogNormal, Quantiles, Sampler, whole
from thunder.traces.synth.setup_times import setup_time_distribution
from thunder.traces.synth.workload import Drawn, draw_steps, draw_tools, tool_names

QUANTILE_PROBS: tuple[float, ...] = (
    0.0, 0.01, 0.05, 0.10, 0.20, 0.30, 0.40, 0.50, 0.60, 0.70, 0.80, 0.90,
    0.95, 0.98, 0.99, 0.995, 0.999, 1.0)


def _table(*values: float) -> Quantiles:
    return Quantiles(QUANTILE_PROBS, tuple(float(v) for v in values))


# Quantiles at QUANTILE_PROBS, as printed by benchmarks/fit_coding_workload.py.
STEPS = _table(31, 35.9, 42, 51.8, 56.6, 63, 70, 73, 80.8, 90, 100.8, 118,
               131.1, 156, 156.18, 160.59, 164.118, 165)
# First prompt of a run: tool schema + system prompt + task + instructions.
PROMPT0_TOKENS = _table(1390, 1390.98, 1411.5, 1428.8, 1466.8, 1502, 1525, 1563, 1617.4,
                        1714.6, 1848.6, 2116.6, 2558.4, 2789.04, 3057.22, 3136.11, 3199.22, 3215)
GROWTH_TOKENS = _table(22, 30, 30, 30, 30, 48, 78, 127, 174, 237, 330, 547, 762.6,
                       1094.16, 1566.76, 1933.88, 2614.19, 4190)
OUTPUT_TOKENS = _table(44, 46, 51, 54, 64, 73, 80, 90, 109, 168, 368, 646, 849.7,
                       1151.62, 1347, 1566.24, 2124.54, 3014)
TOOL_S = _table(0.088, 0.162, 0.185, 0.2, 0.222, 0.239, 0.252, 0.265, 0.28, 0.304, 0.357,
                0.448, 1.263, 2.152, 3.366, 6.856, 36.83, 64.717)
# 97 of the 99 runs report exactly 320 cached tokens on their first call: the
# part of the prompt (tool schema, system prompt) that is the same across tasks.
# mini-swe-agent puts the task before its long instructions, so nothing after
# that is shared. The provider caches in 64-token units, so the truth is 320-383.
SHARED_PREFIX_TOKENS = 320


@dataclass(frozen=True, slots=True)
class CodingParams:
    """Distributions of the coding workload (tokens, seconds, bytes)."""

    steps: Sampler = STEPS
    prompt0_tokens: Sampler = PROMPT0_TOKENS
    growth_tokens: Sampler = GROWTH_TOKENS
    output_tokens: Sampler = OUTPUT_TOKENS
    tool_s: Sampler = TOOL_S
    shared_prefix_tokens: int = SHARED_PREFIX_TOKENS
    # deepseek-chat's window; the real runs peak at 82k, so this rarely binds.
    max_context_tokens: int = 131_072
    # Sandbox: the paper measures mini-SWE-agent sandboxes at about 2 GB; the
    # 0.2 spread is an assumption (images differ per repository).
    disk_bytes: Sampler = LogNormal(median=2e9, sigma=0.2, low=1e9, high=6e9)
    # mini-swe-agent runs commands with `docker exec`: no ports are published.
    ports: int = 0
    # Setup: Terminal-Bench container start + agent install (the same kind of
    # per-task Docker sandbox); None drops env.setup_s.
    setup_s: Sampler | None = field(default_factory=setup_time_distribution)
    with_env: bool = True


def draw(params: CodingParams, rng: np.random.Generator, programs: int) -> Drawn:
    steps = draw_steps(rng, params.steps, programs)
    total = int(steps.sum())
    prompt0 = np.maximum(whole(params.prompt0_tokens.sample(rng, programs), 1),
                         params.shared_prefix_tokens)
    output = whole(params.output_tokens.sample(rng, total))
    growth = whole(params.growth_tokens.sample(rng, total))
    mix = Choice(("bash",), (1.0,))
    # The last step submits: mini-swe-agent exits without running a tool.
    index, seconds = draw_tools(rng, steps, mix, {"bash": params.tool_s}, final_tool=None)
    setup = disk = None
    if params.with_env:
        setup = None if params.setup_s is None else params.setup_s.sample(rng, programs)
        disk = whole(params.disk_bytes.sample(rng, programs))
    return Drawn(workflow="coding", shared_prefix_tokens=params.shared_prefix_tokens,
                 steps=steps, prompt0_tokens=prompt0, output_tokens=output,
                 growth_tokens=growth, tool_index=index, tool_s=seconds,
                 tool_names=tool_names(mix, None), setup_s=setup, disk_bytes=disk,
                 ports=params.ports if params.with_env else None)
