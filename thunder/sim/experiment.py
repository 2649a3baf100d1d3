"""One simulation cell end to end (trace file -> summary and tables), and grids of them.

``run_cell`` is a top-level function of plain arguments so ``thunder compare``
can fan cells out to worker processes.
"""

from __future__ import annotations

import random
import multiprocessing
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache, partial
from typing import Any, Callable, Iterable

from thunder.policies.registry import make_policy
from thunder.results.fairness import fairness_metrics
from thunder.results.rollout import rollout_metrics
from thunder.results.tables import RunTables, build_tables, summarize
from thunder.sim.presets import load_engine_spec
from thunder.sim.run import SimConfig, rollout_batch, simulate
from thunder.sim.step_time import EngineSpec
from thunder.sim.tool_cluster import tool_context, tool_tables
from thunder.sim.tool_host import SimHostConfig
from thunder.traces import TraceProgram, load_trace


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
    mode: str = "closed"  # "rollout": ``programs`` start at t=0 and all run to completion
    programs: int | None = None  # rollout batch size (the trace is cycled with fresh ids if smaller)
    seed: int = 0  # 0: trace order; else the trace's programs shuffled with this seed
    tool_policy: str | None = None  # tool environments: keep | on-demand | program-aware; None: not modelled
    tool_options: tuple[tuple[str, Any], ...] = field(default_factory=tuple)
    disk_capacity_gb: float | None = None  # the tool host's disk (GB = 1e9 bytes); None: unlimited
    group_size: int = 1  # rollout: each trace program runs this many times as one group (GRPO samples)
    unbounded_kv: bool = False  # KV capacity never binds: the upper bound of any policy (see ``bound_cell``)


@lru_cache(maxsize=4)
def _programs(path: str) -> tuple[TraceProgram, ...]:
    return load_trace(path).programs


def run_cell(cell: CellSpec, progress: Callable[[float], None] | None = None,
             keep_tables: bool = False) -> tuple[dict[str, Any], RunTables | None]:
    programs = _programs(cell.trace)
    if cell.seed:
        programs = tuple(random.Random(cell.seed).sample(programs, len(programs)))
    parallel = cell.parallel
    if cell.mode not in ("closed", "rollout"):
        raise ValueError(f"mode {cell.mode!r}: expected 'closed' or 'rollout'")
    if cell.mode == "rollout":
        if cell.horizon_s is not None or cell.open_loop:
            raise ValueError("a rollout starts every program at t=0 and runs to completion: "
                             "no horizon, no open loop")
        programs = rollout_batch(programs, cell.programs or len(programs) * cell.group_size, cell.group_size)
        parallel = len(programs)
    spec = load_engine_spec(cell.preset)
    if cell.unbounded_kv:
        spec = unbounded(spec)
    policy = make_policy(cell.policy, **dict(cell.policy_options))
    config = SimConfig(parallel=parallel, replicas=cell.replicas, open_loop=cell.open_loop,
                       horizon_s=cell.horizon_s, tool_time_scale=cell.tool_time_scale,
                       default_tool_s=cell.default_tool_s, tool_policy=cell.tool_policy,
                       tool_options=cell.tool_options, tool_host=_tool_host(cell))
    outcome = simulate(programs, policy, spec, config, policy_name=cell.policy, progress=progress)
    records = outcome.cluster.records
    tables = build_tables(records.steps, records.programs, records.timeseries, records.decisions,
                          **tool_tables(outcome.cluster))
    # Without tool environments the summary keeps exactly its former keys.
    skip: tuple[str, ...] = ("policy_options", "tool_options")
    if cell.tool_policy is None:
        skip += ("tool_policy", "disk_capacity_gb")
    if not cell.unbounded_kv:
        skip += ("unbounded_kv",)
    if cell.group_size == 1:
        skip += ("group_size",)
    elif cell.mode != "rollout":
        raise ValueError("group_size applies to rollout mode (--mode rollout)")
    context = {k: v for k, v in asdict(cell).items() if k not in skip}
    context["policy_options"] = dict(cell.policy_options)
    if cell.tool_policy is not None:
        context["tool_options"] = dict(cell.tool_options)
        context.update(tool_context(outcome.cluster))
    context["parallel"] = parallel
    context["capacity_tokens_per_replica"] = spec.capacity_tokens
    context["steps_without_tool_time"] = outcome.steps_without_tool_time
    summary = summarize(tables, outcome.ledger, outcome.end_s, **context)
    summary.update(fairness_metrics(tables, outcome.end_s))
    if cell.mode == "rollout":
        summary.update(rollout_metrics(tables))
    return summary, (tables if keep_tables else None)


# Blocks a replica gets in unbounded-KV mode: far beyond any trace's total context
# (16k blocks of 16 tokens hold 262k tokens; this holds 10^10), so nothing is ever
# evicted, preempted or recomputed, and every prefix stays cached.
UNBOUNDED_BLOCKS = 10**10 // 16


def unbounded(spec: EngineSpec) -> EngineSpec:
    """The same engine (step times, scheduler limits) with KV capacity that never binds."""
    return spec.with_blocks(max(spec.num_blocks, UNBOUNDED_BLOCKS))


def bound_cell(cell: CellSpec) -> CellSpec:
    """The upper bound for ``cell``: same trace, parallelism and step-time model, KV
    unbounded. Any program-aware policy can at best match it: with no capacity limit
    there is nothing to pause, no recompute, no preemption and no thrashing; the
    request-level policy then is the ideal (it never holds a request back)."""
    return replace(cell, policy="vllm", policy_options=(), unbounded_kv=True)


def _tool_host(cell: CellSpec) -> SimHostConfig:
    if cell.disk_capacity_gb is None:
        return SimHostConfig()
    return SimHostConfig(disk_capacity_bytes=int(cell.disk_capacity_gb * 1e9))


def _summary_only(cell: CellSpec) -> dict[str, Any]:
    return run_cell(cell)[0]


def _summary_reporting(cell: CellSpec, index: int, updates: Any) -> dict[str, Any]:
    """``_summary_only`` in a worker process, sending ``(index, fraction done)`` to ``updates``."""
    return run_cell(cell, progress=lambda fraction: updates.put((index, fraction)))[0]


CellProgress = Callable[[int, float], None]  # (cell index, fraction of that cell done)


def run_grid(cells: Iterable[CellSpec], workers: int = 1,
             on_result: Callable[[dict[str, Any]], None] | None = None,
             on_progress: CellProgress | None = None) -> list[dict[str, Any]]:
    """Run cells, in ``workers`` processes when > 1; results in the cells' order, and
    ``on_result`` called in that order too. ``on_progress(i, fraction)`` hears how far
    cell ``i`` has got (in this process, whichever process runs the cell)."""
    cells = list(cells)
    if workers <= 1:
        results = []
        for index, cell in enumerate(cells):
            if on_progress is None:
                results.append(_summary_only(cell))
            else:
                results.append(run_cell(cell, progress=partial(on_progress, index))[0])
                on_progress(index, 1.0)
            if on_result:
                on_result(results[-1])
        return results
    if on_progress is None:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = []
            for summary in pool.map(_summary_only, cells):
                results.append(summary)
                if on_result:
                    on_result(summary)
            return results
    return _run_pool_reporting(cells, workers, on_result, on_progress)


def _run_pool_reporting(cells: list[CellSpec], workers: int, on_result: Callable[[dict[str, Any]], None] | None,
                        on_progress: CellProgress) -> list[dict[str, Any]]:
    with multiprocessing.Manager() as manager, ProcessPoolExecutor(max_workers=workers) as pool:
        updates = manager.Queue()
        futures = [pool.submit(_summary_reporting, cell, index, updates) for index, cell in enumerate(cells)]
        results: list[dict[str, Any]] = []
        while len(results) < len(cells):
            wait(futures[len(results):], timeout=0.5, return_when=FIRST_COMPLETED)
            while not updates.empty():
                on_progress(*updates.get())
            while len(results) < len(cells) and futures[len(results)].done():
                index = len(results)
                results.append(futures[index].result())  # a cell's error surfaces here
                on_progress(index, 1.0)
                if on_result:
                    on_result(results[-1])
        return results
