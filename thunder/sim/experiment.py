"""One simulation cell end to end (trace file -> summary and tables), and grids of them.

``run_cell`` is a top-level function of plain arguments so ``thunder compare``
can fan cells out to worker processes.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any, Callable, Iterable

from thunder.metrics import RunTables, build_tables, summarize
from thunder.policies.registry import make_policy
from thunder.sim.hardware import load_engine_spec
from thunder.sim.run import SimConfig, simulate
from thunder.trace import TraceProgram, load_trace


@dataclass(frozen=True, slots=True)
class CellSpec:
    trace: str
    policy: str
    parallel: int
    replicas: int = 1
    preset: str = "paper-8xh100-glm46"
    horizon_s: float | None = None
    open_loop: bool = False
    tool_time_scale: float = 1.0
    default_tool_s: float = 0.0
    policy_options: tuple[tuple[str, Any], ...] = field(default_factory=tuple)


@lru_cache(maxsize=4)
def _programs(path: str) -> tuple[TraceProgram, ...]:
    return load_trace(path).programs


def run_cell(cell: CellSpec, progress: Callable[[float], None] | None = None,
             keep_tables: bool = False) -> tuple[dict[str, Any], RunTables | None]:
    programs = _programs(cell.trace)
    spec = load_engine_spec(cell.preset)
    policy = make_policy(cell.policy, **dict(cell.policy_options))
    config = SimConfig(parallel=cell.parallel, replicas=cell.replicas, open_loop=cell.open_loop,
                       horizon_s=cell.horizon_s, tool_time_scale=cell.tool_time_scale,
                       default_tool_s=cell.default_tool_s)
    outcome = simulate(programs, policy, spec, config, policy_name=cell.policy, progress=progress)
    records = outcome.cluster.records
    tables = build_tables(records.steps, records.programs, records.timeseries, records.decisions)
    context = {k: v for k, v in asdict(cell).items() if k != "policy_options"}
    context["policy_options"] = dict(cell.policy_options)
    context["capacity_tokens_per_replica"] = spec.capacity_tokens
    context["steps_without_tool_time"] = outcome.steps_without_tool_time
    summary = summarize(tables, outcome.ledger, outcome.end_s, **context)
    return summary, (tables if keep_tables else None)


def _summary_only(cell: CellSpec) -> dict[str, Any]:
    return run_cell(cell)[0]


def run_grid(cells: Iterable[CellSpec], workers: int = 1,
             on_result: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Run cells, in ``workers`` processes when > 1; results in the cells' order."""
    cells = list(cells)
    if workers <= 1:
        results = []
        for cell in cells:
            results.append(_summary_only(cell))
            if on_result:
                on_result(results[-1])
        return results
    with ProcessPoolExecutor(max_workers=workers) as pool:
        results = []
        for summary in pool.map(_summary_only, cells):
            results.append(summary)
            if on_result:
                on_result(summary)
        return results
