"""Builders for small simulator scenarios with known answers (imported by the sim tests)."""

from __future__ import annotations

from dataclasses import replace



from thunder.sim.step_time import EngineSpec, StepTimeModel
from thunder.traces import TraceProgram, TraceStep


def engine(num_blocks: int, block_size: int = 16, *, max_num_seqs: int = 64,
           max_num_batched_tokens: int = 2048) -> EngineSpec:
    """A replica whose step time is simple enough to reason about: 10 ms + 1 us/prefill token."""
    step = StepTimeModel(overhead_s=0.01, per_prefill_token_s=1e-6)
    return EngineSpec(name="test", num_blocks=num_blocks, block_size=block_size, max_num_seqs=max_num_seqs,
                      max_num_batched_tokens=max_num_batched_tokens, step_time=step)


def program(program_id: str, prompts: list[int], output: int = 16, tool_s: float = 1.0,
            shared: int = 0, arrival_s: float | None = None) -> TraceProgram:
    steps = []
    for index, prompt in enumerate(prompts):
        last = index == len(prompts) - 1
        steps.append(TraceStep(prompt_tokens=prompt, output_tokens=output,
                               tool=None if last else "bash", tool_s=None if last else tool_s))
    return TraceProgram(program_id=program_id, workflow="test", steps=tuple(steps), arrival_s=arrival_s,
                        shared_prefix_tokens=shared, shared_prefix_id="sys" if shared else None)


def growing(program_id: str, first: int, turns: int, grow: int = 64, output: int = 16,
            tool_s: float = 1.0, shared: int = 0) -> TraceProgram:
    prompts = [first + index * (grow + output) for index in range(turns)]
    return program(program_id, prompts, output=output, tool_s=tool_s, shared=shared)







__all__ = ["engine", "program", "growing", "replace"]
