"""Builders for tool-resource tests: hand-made snapshots, small engines, programs with envs.

A plain module (not conftest.py), imported by name from the tests in this
folder. Disk is given in GB (1e9 bytes) so the arithmetic reads easily.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from thunder.core.environments import HOLDING_STATES, EnvResources, EnvState, EnvView, ToolHostView
from thunder.core.program import Phase, Program, Status
from thunder.core.view import BackendView, ClusterView
from thunder.policies.registry import make_policy
from thunder.results.tables import build_tables, summarize
from thunder.sim.run import SimConfig, simulate
from thunder.sim.step_time import EngineSpec, StepTimeModel
from thunder.sim.tool_cluster import tool_context, tool_tables
from thunder.traces import EnvSpec, TraceProgram, TraceStep

GB = 10**9


# -- snapshots ---------------------------------------------------------------------------


def env(pid: str, state: EnvState = EnvState.NONE, disk_gb: float = 10, ports: int = 0, **extra: Any) -> EnvView:
    return EnvView(pid, state, EnvResources(disk_bytes=int(disk_gb * GB), ports=ports), **extra)


def host(*envs: EnvView, capacity_gb: float | None = None, ports: int | None = None, now: float = 0.0) -> ToolHostView:
    """A host whose used and pending totals follow from the envs' states."""
    used = [e for e in envs if e.state in HOLDING_STATES]
    pending = [e for e in envs if e.state is EnvState.PENDING]
    return ToolHostView(
        now_s=now, disk_capacity_bytes=None if capacity_gb is None else int(capacity_gb * GB),
        disk_used_bytes=sum(e.resources.disk_bytes for e in used),
        disk_pending_bytes=sum(e.resources.disk_bytes for e in pending),
        ports_capacity=ports, ports_used=sum(e.resources.ports for e in used),
        ports_pending=sum(e.resources.ports for e in pending), envs={e.program_id: e for e in envs})


def _program(pid: str, tokens: int, phase: Phase, status: Status, **extra: Any) -> Program:
    fields: dict[str, Any] = {"phase_since_s": 0.0, "arrived_s": 0.0, "steps_done": 1,
                              "backend": 0 if status is Status.ACTIVE else None}
    fields.update(extra)
    return Program(program_id=pid, context_tokens=tokens, phase=phase, status=status, **fields)


def new(pid: str, tokens: int, **extra: Any) -> Program:
    """Queued, never run (restore class: new)."""
    return _program(pid, tokens, Phase.REASONING, Status.PAUSED, steps_done=0, waiting=True,
                    paused_since_s=0.0, **extra)


def waiting(pid: str, tokens: int, **extra: Any) -> Program:
    """Queued with its next request ready (restore class: reasoning)."""
    return _program(pid, tokens, Phase.REASONING, Status.PAUSED, waiting=True, paused_since_s=0.0, **extra)


def paused_acting(pid: str, tokens: int, **extra: Any) -> Program:
    """Queued while its tool runs (restore class: acting)."""
    return _program(pid, tokens, Phase.ACTING, Status.PAUSED, paused_since_s=0.0, **extra)


def running(pid: str, tokens: int = 100, **extra: Any) -> Program:
    """Bound to backend 0, reasoning."""
    return _program(pid, tokens, Phase.REASONING, Status.ACTIVE, **extra)


def cluster(*programs: Program, now: float = 0.0) -> ClusterView:
    return ClusterView(now_s=now, backends=(BackendView(0, 100_000),),
                       programs={p.program_id: p for p in programs})


def ids(decisions: Any, kind: type) -> list[str]:
    return [d.program_id for d in decisions if isinstance(d, kind)]


# -- simulations -------------------------------------------------------------------------


def engine(num_blocks: int, block_size: int = 16) -> EngineSpec:
    """10 ms + 1 us per prefill token per step: simple enough to reason about."""
    step = StepTimeModel(overhead_s=0.01, per_prefill_token_s=1e-6)
    return EngineSpec(name="test", num_blocks=num_blocks, block_size=block_size, max_num_seqs=64,
                      max_num_batched_tokens=2048, step_time=step)


def with_env(pid: str, prompts: list[int], setup_s: float = 1.0, disk_gb: float = 10, ports: int = 1,
             output: int = 16, tool_s: float = 1.0) -> TraceProgram:
    steps = [TraceStep(prompt_tokens=p, output_tokens=output, tool=None if i == len(prompts) - 1 else "bash",
                       tool_s=None if i == len(prompts) - 1 else tool_s) for i, p in enumerate(prompts)]
    return TraceProgram(program_id=pid, workflow="test", steps=tuple(steps),
                        env=EnvSpec(setup_s=setup_s, disk_bytes=int(disk_gb * GB), ports=ports))


def growing(pid: str, first: int, turns: int, grow: int = 64, **kw: Any) -> TraceProgram:
    return with_env(pid, [first + i * (grow + 16) for i in range(turns)], **kw)


def run(programs: list[TraceProgram], scheduler: str, spec: EngineSpec, tool_policy: str | None, *,
        options: dict[str, Any] | None = None, tool_options: dict[str, Any] | None = None,
        **config: Any) -> tuple[Any, Any, dict[str, Any]]:
    """Simulate; return the outcome, the tables and the summary (with the mechanism's context)."""
    sim_config = SimConfig(tool_policy=tool_policy, tool_options=tuple((tool_options or {}).items()), **config)
    outcome = simulate(programs, make_policy(scheduler, **(options or {})), spec, sim_config)
    records = outcome.cluster.records
    tables = build_tables(records.steps, records.programs, records.timeseries, records.decisions,
                          **tool_tables(outcome.cluster))
    summary = summarize(tables, outcome.ledger, outcome.end_s, tool_policy=tool_policy,
                        **tool_context(outcome.cluster))
    return outcome, tables, summary


def first_dispatch(tables: Any, pid: str) -> float:
    steps: pd.DataFrame = tables.steps
    return float(steps[(steps.program_id == pid) & (steps.step == 0)]["dispatched_s"].iloc[0])
