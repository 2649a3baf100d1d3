"""Drive a simulation: replicas + SimCluster + trace-driven agent processes.

Workloads:
* closed loop (default): ``parallel`` programs run at once; when one ends the
  next trace program starts (the paper's "parallel workflow number"). With
  ``horizon_s`` the trace is cycled (each pass gets fresh program ids) until
  the horizon, so throughput is measured at a steady concurrency.
* open loop: each program starts at its trace ``arrival_s``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Sequence

import simpy

from thunder.core.cost import CostLedger
from thunder.core.policy import Policy
from thunder.sim.cluster import SimCluster, SimProgram, SimulationError
from thunder.sim.engine import Replica
from thunder.sim.step_time import EngineSpec
from thunder.sim.tool_cluster import SimHostConfig, build_tool_cluster
from thunder.traces import TraceProgram


@dataclass(frozen=True, slots=True)
class SimConfig:
    parallel: int = 24  # closed loop: programs running at once
    replicas: int = 1
    open_loop: bool = False  # start programs at their arrival_s instead
    horizon_s: float | None = None  # stop here (closed loop cycles the trace until then)
    sample_interval_s: float = 1.0  # time-series resolution
    tool_time_scale: float = 1.0
    default_tool_s: float = 0.0  # for steps whose trace has no tool time
    jump_decode: bool = True  # False: one SimPy event per engine step (slow reference)
    # Tool environments (thunder.sim.tool_cluster): None leaves them unmodelled, the behaviour before.
    tool_policy: str | None = None  # keep | on-demand | program-aware
    tool_options: tuple[tuple[str, Any], ...] = ()
    tool_host: SimHostConfig = SimHostConfig()  # disk capacity, defaults for a trace without env
    # Without tool environments: a program's worker first spends its trace's env.setup_s (the
    # sandbox it prepares) before the first call, holding its closed-loop slot meanwhile, as a
    # recorded batch did. False: programs start at once (the behaviour before).
    env_setup: bool = False


@dataclass(slots=True)
class SimOutcome:
    """Raw outcome; ``thunder.results.tables`` turns it into tables and a summary."""

    cluster: SimCluster
    replicas: list[Replica]
    end_s: float
    config: SimConfig
    spec: EngineSpec
    policy_name: str
    steps_without_tool_time: int = 0
    ledger: CostLedger = field(default_factory=CostLedger)


def _cycled(programs: Sequence[TraceProgram]) -> Iterator[TraceProgram]:
    """The trace again and again; later passes get ids (and group ids) ``<id>#<pass>``."""
    passes = 0
    while True:
        for program in programs:
            if passes == 0:
                yield program
            else:
                yield TraceProgram(program_id=f"{program.program_id}#{passes}", workflow=program.workflow,
                                   steps=program.steps, arrival_s=program.arrival_s, env=program.env,
                                   shared_prefix_tokens=program.shared_prefix_tokens,
                                   shared_prefix_id=program.shared_prefix_id,
                                   group_id=None if program.group_id is None
                                   else f"{program.group_id}#{passes}")
        passes += 1


def rollout_batch(programs: Sequence[TraceProgram], count: int, group_size: int = 1) -> tuple[TraceProgram, ...]:
    """The first ``count`` programs of the trace, cycled with fresh ids when it holds fewer:
    an RL rollout batch. Run it closed-loop with ``parallel=count`` and every program starts at t=0.

    ``group_size`` > 1 makes GRPO-style groups: each trace program is run that many
    times (ids ``<id>/<k>``) as one group (``group_id``: the trace's own, else its id)."""
    if count < 1:
        raise ValueError(f"a rollout needs at least one program, got {count}")
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    source = _cycled(programs)
    if group_size == 1:
        return tuple(next(source) for _ in range(count))
    batch: list[TraceProgram] = []
    while len(batch) < count:
        base = next(source)
        group = base.group_id or base.program_id
        for k in range(min(group_size, count - len(batch))):
            batch.append(replace(base, program_id=f"{base.program_id}/{k}", group_id=group))
    return tuple(batch)


class _Workload:
    def __init__(self, env: simpy.Environment, cluster: SimCluster, config: SimConfig) -> None:
        self.env = env
        self.cluster = cluster
        self.config = config
        self.missing_tool_times = 0
        self.active = 0

    def run_program(self, trace: TraceProgram):
        if self.config.env_setup and self.config.tool_policy is None and trace.env and trace.env.setup_s:
            yield self.env.timeout(trace.env.setup_s)
        program: SimProgram = self.cluster.arrive(trace)
        steps = trace.steps
        self.active += 1
        for index, step in enumerate(steps):
            yield self.cluster.request_ready(program)
            if index == len(steps) - 1:
                break
            tool_s = step.tool_s
            if tool_s is None:
                self.missing_tool_times += 1
                tool_s = self.config.default_tool_s
            yield self.env.timeout(tool_s * self.config.tool_time_scale)
        self.active -= 1

    def closed_loop(self, source: Iterator[TraceProgram]):
        def slot():
            for trace in source:
                yield self.env.process(self.run_program(trace))
        for _ in range(self.config.parallel):
            self.env.process(slot())
        yield self.env.timeout(0)

    def open_loop(self, programs: Sequence[TraceProgram]):
        for trace in sorted(programs, key=lambda p: (p.arrival_s or 0.0, p.program_id)):
            delay = (trace.arrival_s or 0.0) - self.env.now
            if delay > 0:
                yield self.env.timeout(delay)
            self.env.process(self.run_program(trace))


def _ticker(env: simpy.Environment, cluster: SimCluster, interval_s: float):
    while True:
        yield env.timeout(interval_s)
        cluster.tick()


def _sampler(env: simpy.Environment, cluster: SimCluster, interval_s: float):
    while True:
        sample_backends(cluster)
        yield env.timeout(interval_s)


def sample_backends(cluster: SimCluster) -> None:
    now = cluster.env.now
    program_tokens = [0] * len(cluster.replicas)
    queued = 0
    for view in cluster.views.values():
        if view.backend is not None:
            program_tokens[view.backend] += view.context_tokens
        else:
            queued += 1
    for replica in cluster.replicas:
        cache = replica.cache
        cluster.records.timeseries.append({
            "time_s": now, "backend": replica.backend_id, "capacity_tokens": replica.spec.capacity_tokens,
            "running_tokens": cache.used_blocks * replica.block_size,
            "cached_tokens": (cache.free_cached_blocks + cache.pinned_blocks) * replica.block_size,
            "program_tokens": program_tokens[replica.backend_id],
            "running_requests": len(replica.running), "waiting_requests": len(replica.waiting),
            "queued_programs": queued,
        })


def simulate(programs: Sequence[TraceProgram], policy: Policy, spec: EngineSpec, config: SimConfig,
             policy_name: str = "", progress: Callable[[float], None] | None = None) -> SimOutcome:
    """Run one simulation to completion (or to the horizon) and return its outcome."""
    if not programs:
        raise ValueError("no programs to simulate")
    ids = [p.program_id for p in programs]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"duplicate program_id {duplicate!r}: every program needs its own id")
    env = simpy.Environment()
    replicas = [Replica(env, i, spec, jump_decode=config.jump_decode) for i in range(config.replicas)]
    all_done = env.event()
    expected = len(programs)
    finished = [0]

    def on_program_end(_: SimProgram) -> None:
        finished[0] += 1
        if finished[0] == expected and config.horizon_s is None and not all_done.triggered:
            all_done.succeed()

    cluster: SimCluster
    if config.tool_policy is None:
        cluster = SimCluster(env, replicas, policy, on_program_end=on_program_end)
    else:  # each dispatch waits for the program's tool environment
        cluster = build_tool_cluster(env, replicas, policy, config.tool_policy, dict(config.tool_options),
                                     config.tool_host, on_program_end, done=all_done)
    workload = _Workload(env, cluster, config)
    if config.open_loop:
        env.process(workload.open_loop(programs))
    else:
        source = _cycled(programs) if config.horizon_s is not None else iter(programs)
        env.process(workload.closed_loop(source))
    interval = policy.interval_s
    if interval:
        env.process(_ticker(env, cluster, interval))
    env.process(_sampler(env, cluster, config.sample_interval_s))
    total_steps = sum(len(p.steps) for p in programs)
    _run_until_done(env, cluster, all_done, config, progress, total_steps)
    sample_backends(cluster)
    outcome = SimOutcome(cluster=cluster, replicas=replicas, end_s=env.now, config=config, spec=spec,
                         policy_name=policy_name, steps_without_tool_time=workload.missing_tool_times)
    for replica in replicas:
        replica.charge_idle()
        outcome.ledger.merge(replica.ledger)
    return outcome


def _run_until_done(env: simpy.Environment, cluster: SimCluster, all_done: simpy.Event, config: SimConfig,
                    progress: Callable[[float], None] | None, total_steps: int) -> None:
    """Advance in chunks (for the progress callback) until every program ended or the horizon.

    A run where nothing completes for a simulated day is stuck (a policy that
    never restores, a request that can never be admitted): fail loudly."""
    chunk_s = 60.0
    steps = cluster.records.steps
    stalled_since_s, last_count = 0.0, 0
    while not all_done.processed:
        target = env.now + chunk_s
        if config.horizon_s is not None:
            target = min(target, config.horizon_s)
        env.run(until=env.any_of([all_done, env.timeout(target - env.now)]))
        if progress is not None:
            done = env.now / config.horizon_s if config.horizon_s else len(steps) / max(total_steps, 1)
            progress(min(1.0, done))
        if config.horizon_s is not None and env.now >= config.horizon_s:
            return
        if len(steps) != last_count:
            stalled_since_s, last_count = env.now, len(steps)
        elif env.now - stalled_since_s > 86_400:
            raise SimulationError(f"simulation stalled: no step completed since t={stalled_since_s:.0f}s "
                                  f"({len(cluster.programs)} programs unfinished)")
