"""The result tables' one schema: column names and the row builders both worlds use.

A simulated run (``thunder.sim.cluster``) and a live one (``thunder.runtime.cluster``)
write the same steps, programs and decisions tables, so the same notebook and
``thunder.results`` read either. The builders take every column as a keyword, so a
column a world forgets, or one it misspells, fails at once instead of leaving a hole
in a table. Unknown values are None (a live run cannot see engine admission or
preemptions per request).
"""

from __future__ import annotations

from typing import Any, Protocol

from thunder.core.program import BackendId, ProgramId

STEP_COLUMNS = ("program_id", "step", "backend", "ready_s", "dispatched_s", "engine_arrival_s", "admitted_s",
                "first_token_s", "done_s", "prompt_tokens", "cached_tokens", "recompute_tokens", "output_tokens",
                "preemptions", "tool", "tool_s")
PROGRAM_COLUMNS = ("program_id", "arrived_s", "started_s", "finished_s", "steps", "pauses", "restores",
                   "migrations", "queue_s", "last_backend", "group_id")
DECISION_COLUMNS = ("time_s", "action", "program_id", "backend", "reason")
TABLES = {"steps": STEP_COLUMNS, "programs": PROGRAM_COLUMNS, "decisions": DECISION_COLUMNS}

DecisionRow = tuple[float, str, ProgramId, BackendId | None, str]  # in DECISION_COLUMNS order


class ProgramRecord(Protocol):
    """The mechanism-side counters of a program that its programs-table row reports."""

    program_id: ProgramId
    arrived_s: float
    started_s: float | None
    pauses: int
    restores: int
    migrations: int
    queue_s: float
    last_backend: BackendId | None


def step_row(*, program_id: ProgramId, step: int, backend: BackendId | None, ready_s: float,
             dispatched_s: float | None, engine_arrival_s: float | None, admitted_s: float | None,
             first_token_s: float | None, done_s: float | None, prompt_tokens: int | None, cached_tokens: int | None,
             recompute_tokens: int | None, output_tokens: int | None, preemptions: int | None,
             tool: str | None, tool_s: float | None) -> dict[str, Any]:
    """One completed LLM call (times in seconds since the run started; tokens as the engine counted them)."""
    return {"program_id": program_id, "step": step, "backend": backend, "ready_s": ready_s,
            "dispatched_s": dispatched_s, "engine_arrival_s": engine_arrival_s, "admitted_s": admitted_s,
            "first_token_s": first_token_s, "done_s": done_s, "prompt_tokens": prompt_tokens,
            "cached_tokens": cached_tokens, "recompute_tokens": recompute_tokens, "output_tokens": output_tokens,
            "preemptions": preemptions, "tool": tool, "tool_s": tool_s}


def program_row(program: ProgramRecord, *, finished_s: float, steps: int, group_id: str | None) -> dict[str, Any]:
    """One ended program: when it came, started and ended, and what the scheduler did to it."""
    return {"program_id": program.program_id, "arrived_s": program.arrived_s, "started_s": program.started_s,
            "finished_s": finished_s, "steps": steps, "pauses": program.pauses, "restores": program.restores,
            "migrations": program.migrations, "queue_s": program.queue_s, "last_backend": program.last_backend,
            "group_id": group_id}
