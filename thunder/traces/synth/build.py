"""Turn a workload draw (flat arrays) into trace v1 programs.

Two jobs that need the whole draw: computing each step's prompt from the
growth model, and ending programs that would overflow the model's context
window. Then a plain loop builds the frozen ``TraceProgram`` values lazily, so
a caller that streams them to disk never holds all of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import numpy as np

from thunder.traces.format import EnvSpec, TraceProgram, TraceStep
from thunder.traces.synth.workload import NO_TOOL, Drawn


def step_prompts(drawn: Drawn) -> np.ndarray:
    """prompt_k = prompt_{k-1} + output_{k-1} + growth_k within each program.

    This is trace v1's growth rule with equality plus a non-negative
    increment, so every drawn trace validates. Computed as one cumulative sum
    over all steps, re-based at each program's first step.
    """
    starts = np.cumsum(drawn.steps) - drawn.steps
    increment = np.empty_like(drawn.output_tokens)
    increment[1:] = drawn.output_tokens[:-1] + drawn.growth_tokens[1:]
    increment[starts] = 0
    running = np.cumsum(increment)
    return running - np.repeat(running[starts] - drawn.prompt0_tokens, drawn.steps)


def cap_context(drawn: Drawn, max_context_tokens: int) -> Drawn:
    """End each program at its last step whose prompt + output fits the window.

    A real agent stops when its context no longer fits (the next call fails).
    Because prompt_{k+1} >= prompt_k + output_k, the steps that overflow form
    a suffix of each program; the first step always stays.
    """
    prompt = step_prompts(drawn)
    keep = prompt + drawn.output_tokens <= max_context_tokens
    keep[np.cumsum(drawn.steps) - drawn.steps] = True
    if keep.all():
        return drawn
    starts = np.cumsum(drawn.steps) - drawn.steps
    kept_steps = np.add.reduceat(keep.astype(np.int64), starts)
    return replace(drawn, steps=kept_steps,
                   output_tokens=drawn.output_tokens[keep], growth_tokens=drawn.growth_tokens[keep],
                   tool_index=drawn.tool_index[keep], tool_s=drawn.tool_s[keep])


def iter_built(drawn: Drawn, id_prefix: str, shared_prefix_id: str,
               arrival_s: np.ndarray | None) -> Iterator[TraceProgram]:
    """Yield one ``TraceProgram`` per drawn program, in order."""
    prompts = step_prompts(drawn).tolist()
    outputs = drawn.output_tokens.tolist()
    tools = [None if i == NO_TOOL else drawn.tool_names[i] for i in drawn.tool_index.tolist()]
    seconds = np.round(drawn.tool_s, 3).tolist()
    arrivals = None if arrival_s is None else np.round(arrival_s, 3).tolist()
    envs = _envs(drawn)
    width = max(5, len(str(drawn.steps.size - 1)))
    end = 0
    for i, count in enumerate(drawn.steps.tolist()):
        start, end = end, end + count
        # positional TraceStep(prompt, output, cached, llm_latency, tool, tool_s): this loop
        # builds ~750k steps for a 10k-program coding trace, keywords cost ~30% more
        steps = tuple(TraceStep(prompts[k], outputs[k], None, None, tools[k],
                                None if tools[k] is None else seconds[k])
                      for k in range(start, end))
        yield TraceProgram(
            program_id=f"{id_prefix}{i:0{width}d}",
            workflow=drawn.workflow,
            steps=steps,
            arrival_s=None if arrivals is None else arrivals[i],
            env=None if envs is None else envs[i],
            shared_prefix_tokens=drawn.shared_prefix_tokens,
            shared_prefix_id=shared_prefix_id if drawn.shared_prefix_tokens else None,
        )


def _envs(drawn: Drawn) -> list[EnvSpec] | None:
    if drawn.setup_s is None and drawn.disk_bytes is None and drawn.ports is None:
        return None
    count = drawn.steps.size
    setup = [None] * count if drawn.setup_s is None else np.round(drawn.setup_s, 3).tolist()
    disk = [None] * count if drawn.disk_bytes is None else drawn.disk_bytes.tolist()
    return [EnvSpec(setup_s=setup[i], disk_bytes=disk[i], ports=drawn.ports) for i in range(count)]
