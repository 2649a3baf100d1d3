"""The arrays one workload draw produces, and the draw helpers workloads share.

A workload model (``coding``, ``routing``, ``science``) turns its parameters
and a seeded generator into a ``Drawn``: flat numpy arrays, one entry per
program or per step, with steps of program i stored contiguously after those
of program i-1. Everything is vectorised: drawing 750k steps is a handful of
numpy calls, not a Python loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from thunder.traces.synth.distributions import Choice, Sampler, whole

NO_TOOL = -1


@dataclass(frozen=True, slots=True, eq=False)
class Drawn:
    """One workload draw, before it becomes ``TraceProgram`` values.

    Per program (length P): ``steps``, ``prompt0_tokens`` (first prompt, shared
    prefix included), optional env arrays. Per step (length sum(steps)):
    ``output_tokens``, ``growth_tokens`` (tokens appended to the context before
    this step beyond the previous output: tool result and template text;
    ignored on a program's first step), ``tool_index`` into ``tool_names``
    (``NO_TOOL`` for none) and ``tool_s`` (ignored where there is no tool).
    """

    workflow: str
    shared_prefix_tokens: int
    steps: np.ndarray
    prompt0_tokens: np.ndarray
    output_tokens: np.ndarray
    growth_tokens: np.ndarray
    tool_index: np.ndarray
    tool_s: np.ndarray
    tool_names: tuple[str, ...]
    setup_s: np.ndarray | None = None
    disk_bytes: np.ndarray | None = None
    ports: int | None = None


def last_steps(steps: np.ndarray) -> np.ndarray:
    """Flat indices of each program's final step."""
    return np.cumsum(steps) - 1


def draw_tools(rng: np.random.Generator, steps: np.ndarray, mix: Choice,
               latency_s: Mapping[str, Sampler], final_tool: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Pick a tool per step from ``mix`` and draw its latency.

    The final step of every program calls ``final_tool`` (``None``: no tool,
    the agent just stops). Latencies are drawn per tool, in the order of
    ``names`` (then the final tool), so the stream of draws is fixed by the seed.
    """
    names = tool_names(mix, final_tool)
    total = int(steps.sum())
    index = mix.sample_index(rng, total)
    ends = last_steps(steps)
    index[ends] = NO_TOOL if final_tool is None else names.index(final_tool)
    seconds = np.zeros(total)
    for position, name in enumerate(names):
        chosen = np.flatnonzero(index == position)
        if chosen.size:
            seconds[chosen] = latency_s[name].sample(rng, chosen.size)
    return index, seconds


def tool_names(mix: Choice, final_tool: str | None) -> tuple[str, ...]:
    """The name table ``draw_tools`` indexes into: the mix, then the final tool."""
    if final_tool is None or final_tool in mix.names:
        return mix.names
    return mix.names + (final_tool,)


def draw_steps(rng: np.random.Generator, sampler: Sampler, programs: int) -> np.ndarray:
    """Steps per program: at least one (a trace program may not be empty)."""
    return whole(sampler.sample(rng, programs), low=1)
