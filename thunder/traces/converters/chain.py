"""Mark the steps whose prompt does not extend the previous step's context.

Trace v1 says a prompt holds the whole previous context (previous prompt plus
its output) unless the step sets ``context_reset``. Provider-counted prompts
can break this: a template may drop earlier text (e.g. reasoning content) or
an agent may truncate its history. Such a step is kept with its measured
numbers and marked as a reset; nothing is clamped or invented.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

from thunder.traces.format import TraceStep

PROMPT_SHRANK = "prompt_shrank"  # prompt below the previous prompt
GREW_LESS_THAN_OUTPUT = "grew_less_than_output"  # grew, but by less than the previous output


def mark_context_resets(steps: Sequence[TraceStep]) -> tuple[tuple[TraceStep, ...], tuple[tuple[int, str], ...]]:
    """Set ``context_reset`` where the growth rule fails.

    Returns the steps and one ``(step_index, cause)`` per step it marked.
    """
    out: list[TraceStep] = []
    marked: list[tuple[int, str]] = []
    for index, step in enumerate(steps):
        previous = out[-1] if out else None
        if previous is not None and not step.context_reset:
            cause = None
            if step.prompt_tokens < previous.prompt_tokens:
                cause = PROMPT_SHRANK
            elif step.prompt_tokens < previous.prompt_tokens + previous.output_tokens:
                cause = GREW_LESS_THAN_OUTPUT
            if cause is not None:
                marked.append((index, cause))
                step = replace(step, context_reset=True)
        out.append(step)
    return tuple(out), tuple(marked)
