"""Scale a trace's token counts, keeping it valid: for small models and live replays.

A trace recorded on a large model has contexts a tiny CPU model cannot hold.
Multiplying every token count by ``token_scale`` keeps the shape of the
workload (growth per turn, output lengths, shared prefix) while contexts fit.
Rounding may make a prompt shorter than the previous prompt plus its output,
which format v1 forbids (histories only grow); such a prompt is raised to
that sum. Write the result with ``thunder.traces.format.write_trace`` and replay it
with ``--token-scale 1`` so that the simulator and the replay see exactly the
same counts.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable

from thunder.traces.format import TraceProgram


def scale_tokens(tokens: int, scale: float) -> int:
    """At least one token, rounded to nearest (the replayer's rule)."""
    return max(1, int(round(tokens * scale)))


def scale_trace(programs: Iterable[TraceProgram], token_scale: float, max_steps: int | None = None) -> list[TraceProgram]:
    """Every program's first ``max_steps`` steps (all if None), token counts times ``token_scale``."""
    out = []
    for program in programs:
        steps, floor = [], 0
        for step in program.steps[:max_steps]:
            if step.context_reset:
                floor = 0
            prompt = max(scale_tokens(step.prompt_tokens, token_scale), floor)
            output = scale_tokens(step.output_tokens, token_scale)
            cached = None if step.cached_tokens is None else min(prompt, scale_tokens(step.cached_tokens, token_scale))
            steps.append(dataclasses.replace(step, prompt_tokens=prompt, output_tokens=output, cached_tokens=cached))
            floor = prompt + output
        shared = scale_tokens(program.shared_prefix_tokens, token_scale) if program.shared_prefix_id else 0
        out.append(dataclasses.replace(program, steps=tuple(steps), shared_prefix_tokens=shared))
    return out
