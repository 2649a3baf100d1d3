"""What the default policy learns from the programs it sees, between its steps.

Output lengths (per program and overall), how much a prompt grows from one turn to the
next, how long each tool runs (``estimates``), which programs were restored while
acting (counted in full until their tool returns), and how far each rollout group is.
All of it comes from what both worlds report: a finished request's output tokens, the
time and context from a response to the program's next request, a program's group id.
"""

from __future__ import annotations

from thunder.core.program import Phase, Program, ProgramId
from thunder.core.view import TriggerKind
from thunder.policies.thunder.estimates import OutputLengths, ToolDurations


class ProgramHistory:
    def __init__(self, quantile: float, output_prior_tokens: int, growth_prior_tokens: int, min_samples: int,
                 return_horizon_s: float) -> None:
        self.outputs = OutputLengths(quantile, output_prior_tokens, min_samples)
        self.growth = OutputLengths(quantile, growth_prior_tokens, min_samples)
        self.tools = ToolDurations(return_horizon_s, min_samples)
        self.restored_acting: set[ProgramId] = set()  # counted in full until their tool returns
        self._context_after: dict[ProgramId, int] = {}  # context when its last request completed
        self._acting: dict[ProgramId, tuple[float, str | None]] = {}  # since, tool: for tool durations
        self._group_of: dict[ProgramId, str] = {}
        self._group_seen: dict[str, int] = {}
        self._group_done: dict[str, int] = {}

    def observe(self, now_s: float, kind: TriggerKind, program: Program) -> None:
        """A trigger about a program that is still running."""
        program_id = program.program_id
        if program.group_id is not None and program_id not in self._group_of:
            self.join_group(program)
        if kind is TriggerKind.REQUEST_DONE and program.phase is Phase.ACTING:
            if program.last_output_tokens is not None:
                self.outputs.observe(program_id, program.last_output_tokens)
            self._acting[program_id] = (program.phase_since_s, program.tool)
            self._context_after[program_id] = program.context_tokens
        elif kind in (TriggerKind.TOOL_DONE, TriggerKind.ARRIVAL):
            self.returned(now_s, program)

    def returned(self, now_s: float, program: Program) -> None:
        """The program's tool returned (its next request is ready): learn how long it ran."""
        if program.phase is not Phase.REASONING:
            return
        self.restored_acting.discard(program.program_id)
        before = self._context_after.pop(program.program_id, None)
        if before is not None and program.context_tokens >= before:  # not after a context reset
            self.growth.observe(program.program_id, program.context_tokens - before)
        started = self._acting.pop(program.program_id, None)
        if started is not None:
            since_s, tool = started
            self.tools.observe(tool, max(0.0, now_s - since_s))

    def forget(self, program_id: ProgramId) -> None:
        """The program ended: drop what is its own, count it done in its group."""
        self._acting.pop(program_id, None)
        self.restored_acting.discard(program_id)
        self.outputs.forget(program_id)
        self.growth.forget(program_id)
        self._context_after.pop(program_id, None)
        group = self._group_of.pop(program_id, None)
        if group is not None:
            self._group_done[group] = self._group_done.get(group, 0) + 1

    def in_group_books(self, program_id: ProgramId) -> bool:
        return program_id in self._group_of

    def join_group(self, program: Program) -> None:
        group = program.group_id
        assert group is not None
        self._group_of[program.program_id] = group
        self._group_seen[group] = self._group_seen.get(group, 0) + 1

    def group_progress(self, program_id: ProgramId) -> float:
        """Share of the program's rollout group already finished (0 without a group)."""
        group = self._group_of.get(program_id)
        if group is None:
            return 0.0
        return self._group_done.get(group, 0) / max(1, self._group_seen.get(group, 1))


__all__ = ["ProgramHistory"]
