"""Tool-resource policies (paper, sections 3.3 and 4.4): prepare environments, reclaim them.

A tool-resource policy sees the same ``ClusterView`` the scheduler sees plus
a ``ToolHostView`` (``thunder.core.environments``) and returns ``PrepareEnv`` /
``ReclaimEnv`` decisions. All three prepare, at once, every environment a
held program is waiting for (it holds a GPU slot, or wants one, right now);
they differ in what else they do:

* ``keep``: nothing else. Environments live until the run ends: what the
  paper measures for vLLM + Kubernetes (Figure 2b: disk grows with every
  processed workflow until the host is full).
* ``on-demand``: also tears an environment down as soon as its program is
  released (hook-based garbage collection), but prepares only when needed,
  so a program restored onto a backend waits ``setup_s`` with its GPU slot
  reserved.
* ``program-aware`` (ThunderAgent, 4.4): garbage collection as above, plus
  asynchronous preparation: walking the global queue in restore order
  (``S_restore``, Eq. 10, the scheduler's own key), the first ``lookahead``
  programs that are new or lack an environment get one prepared while they
  wait (paused programs that kept theirs are looked past), within a budget of
  concurrent preparations and of the host's disk. Environments of programs
  that sit in the queue idle past ``idle_timeout_s`` are torn down too (a
  client that never releases), except the first ``lookahead`` in restore
  order. And when a held program's environment waits for room, queued
  programs' idle environments are torn down, back of the restore order
  first (only if that makes enough room), so that environments parked in
  the queue never starve a program that already holds the GPU.

Ties are broken by program id, so decisions are deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from thunder.core.environments import (HOLDING_STATES, EnvState, EnvView, PrepareEnv, ReclaimEnv, ToolDecision,
                               ToolHostView)
from thunder.core.options import option, require
from thunder.core.program import Phase, Program, ProgramId, Status
from thunder.core.view import ClusterView
from thunder.policies.thunder.index import queued_since_s
from thunder.policies.thunder.paper_rules import restore_class

_UNPREPARED = (EnvState.NONE, EnvState.RECLAIMED)
_IN_FLIGHT = (EnvState.PENDING, EnvState.PREPARING)


def prepare_needed(host: ToolHostView) -> list[PrepareEnv]:
    """Every environment a held program waits for that nobody prepares yet, longest wait first."""
    needed = [e for e in host.envs.values()
              if e.needed_since_s is not None and e.state in _UNPREPARED and not e.released]
    needed.sort(key=lambda e: (e.needed_since_s, e.program_id))
    return [PrepareEnv(e.program_id, "needed") for e in needed]


def reclaim_released(host: ToolHostView) -> list[ReclaimEnv]:
    """Hook-based garbage collection: released programs' environments, at once."""
    return [ReclaimEnv(e.program_id, "released") for e in sorted(host.envs.values(), key=_by_id)
            if e.released and e.live]


def restore_order(cluster: ClusterView, starvation_s: float) -> list[Program]:
    """The global queue in the thunder scheduler's restore order: aged first, then
    reasoning > new > acting (Eq. 10), shortest context first, ties by id."""
    aged_before_s = cluster.now_s - starvation_s
    return sorted(cluster.queued(), key=lambda p: (queued_since_s(p) > aged_before_s, restore_class(p),
                                                   p.context_tokens, p.program_id))


def _by_id(env: EnvView) -> ProgramId:
    return env.program_id


@dataclass(frozen=True, slots=True)
class KeepConfig:
    interval_s: float = option(5.0, "seconds between periodic checks (read by the mechanism)")


@dataclass(frozen=True, slots=True)
class OnDemandConfig:
    interval_s: float = option(5.0, "seconds between periodic checks (read by the mechanism)")


class KeepUntilRunEnd:
    """Prepare when needed; never reclaim (today's vLLM + Kubernetes)."""

    name = "keep"

    @property
    def interval_s(self) -> float:
        return self.config.interval_s

    def __init__(self, config: KeepConfig = KeepConfig()) -> None:
        self.config = config

    def decide(self, cluster: ClusterView, host: ToolHostView) -> list[ToolDecision]:
        return list(prepare_needed(host))


class PrepareOnDemand:
    """Prepare when needed; reclaim when the program is released."""

    name = "on-demand"

    @property
    def interval_s(self) -> float:
        return self.config.interval_s

    def __init__(self, config: OnDemandConfig = OnDemandConfig()) -> None:
        self.config = config

    def decide(self, cluster: ClusterView, host: ToolHostView) -> list[ToolDecision]:
        return [*reclaim_released(host), *prepare_needed(host)]


@dataclass(frozen=True, slots=True)
class ProgramAwareToolsConfig:
    interval_s: float = option(5.0, "seconds between periodic checks (read by the mechanism)")
    lookahead: int = option(16, "how many queued programs, new or without an environment, from the front "
                                "of the restore order, get one prepared while they wait")
    max_preparing: int = option(16, "preparations in flight (pending or preparing) beyond which none is "
                                    "started ahead; a held program's preparation always starts")
    ahead_disk_fraction: float = option(0.9, "prepare ahead only while the host's disk, started and pending, "
                                             "stays within this share of its capacity")
    idle_timeout_s: float = option(3600.0, "tear down a queued program's environment idle this long "
                                           "(s; math.inf disables): a client that never released")
    starvation_s: float = option(60.0, "the scheduler's starvation_s, so the predicted restore order is its own")
    make_room: bool = option(True, "when a held program's environment waits for room, tear down queued "
                                   "programs' idle environments, back of the restore order first")

    def __post_init__(self) -> None:
        require(self.interval_s > 0, "interval_s must be > 0")
        require(self.lookahead >= 0, "lookahead must be >= 0 (0 disables preparing ahead)")
        require(self.max_preparing >= 0, "max_preparing must be >= 0")
        require(0 < self.ahead_disk_fraction <= 1, "need 0 < ahead_disk_fraction <= 1")
        require(self.idle_timeout_s > 0, "idle_timeout_s must be > 0 (math.inf disables)")
        require(self.starvation_s >= 0, "starvation_s must be >= 0")


@dataclass(slots=True)
class _Planned:
    """What this step's earlier decisions already change on the host (bytes, ports, preparations)."""

    disk_bytes: int = 0
    ports: int = 0
    preparing: int = 0

    def prepare(self, env: EnvView) -> None:
        self.disk_bytes += env.resources.disk_bytes
        self.ports += env.resources.ports
        self.preparing += 1

    def reclaim(self, env: EnvView) -> None:
        """Resources of a live env return (a PENDING one's were counted as asked for)."""
        self.disk_bytes -= env.resources.disk_bytes
        self.ports -= env.resources.ports
        if env.state in _IN_FLIGHT:
            self.preparing -= 1


class PrepareAheadAndCollect:
    """ThunderAgent's tool resource manager: GC on release and idle, prepare ahead of restore."""

    name = "program-aware"

    @property
    def interval_s(self) -> float:
        return self.config.interval_s

    def __init__(self, config: ProgramAwareToolsConfig = ProgramAwareToolsConfig()) -> None:
        self.config = config

    def decide(self, cluster: ClusterView, host: ToolHostView) -> list[ToolDecision]:
        planned = _Planned(preparing=sum(1 for e in host.envs.values() if e.state in _IN_FLIGHT))
        decisions: list[ToolDecision] = []
        for reclaim in reclaim_released(host):
            planned.reclaim(host.envs[reclaim.program_id])
            decisions.append(reclaim)
        for prepare in prepare_needed(host):
            planned.prepare(host.envs[prepare.program_id])
            decisions.append(prepare)
        order = restore_order(cluster, self.config.starvation_s)
        front = self._front(host, order)
        # Never idle-collect the next few to be restored: they would be prepared again at once.
        window = {p.program_id for p in order[:self.config.lookahead]}
        if self.config.make_room:
            decisions.extend(self._make_room(host, order, planned))
        decisions.extend(self._idle(cluster, host, window, planned, decided=decisions))
        decisions.extend(self._ahead(host, front, planned))
        return decisions

    def _front(self, host: ToolHostView, order: list[Program]) -> list[Program]:
        """The queue's front: up to its ``lookahead``-th program that is new or has no live
        environment. Programs that have run and kept theirs are looked past at no cost; a new
        one counts whether prepared already or not, so at most ``lookahead`` environments wait
        prepared ahead of their programs' first turn."""
        counted = 0
        for index, program in enumerate(order):
            env = host.envs.get(program.program_id)
            if env is None or env.released or (env.live and not program.is_new):
                continue
            counted += 1
            if counted > self.config.lookahead:
                return order[:index]
        return order

    def _make_room(self, host: ToolHostView, order: list[Program], planned: _Planned) -> list[ReclaimEnv]:
        """Tear down queued programs' environments, back of the order first, until the
        environments held programs wait for fit; nothing if even all of them would not do."""
        waiting = any(e.needed_since_s is not None and e.state in (*_UNPREPARED, EnvState.PENDING)
                      for e in host.envs.values())
        if not waiting or not _short(host, planned):
            return []
        trial = replace(planned)
        victims: list[EnvView] = []
        for program in reversed(order):
            env = host.envs.get(program.program_id)
            if env is None or not env.live or not _parked(env, program):
                continue
            trial.reclaim(env)
            victims.append(env)
            if not _short(host, trial):
                break
        if _short(host, trial):
            return []  # they would be torn down for nothing: wait for running programs to end
        for env in victims:
            planned.reclaim(env)
        return [ReclaimEnv(env.program_id, "make-room") for env in victims]

    def _idle(self, cluster: ClusterView, host: ToolHostView, window: set[ProgramId], planned: _Planned,
              decided: list[ToolDecision]) -> list[ReclaimEnv]:
        if math.isinf(self.config.idle_timeout_s):
            return []
        done = {d.program_id for d in decided}
        reclaims = []
        for env in sorted(host.envs.values(), key=_by_id):
            program = cluster.programs.get(env.program_id)
            if (program is None or env.program_id in window or env.program_id in done
                    or env.state not in HOLDING_STATES or not _parked(env, program)
                    or env.idle_for_s(host.now_s) < self.config.idle_timeout_s):
                continue
            planned.reclaim(env)
            reclaims.append(ReclaimEnv(env.program_id, "idle"))
        return reclaims

    def _ahead(self, host: ToolHostView, front: list[Program], planned: _Planned) -> list[PrepareEnv]:
        """Front of the queue first; stop at the first that does not fit, so a smaller
        environment further back never takes the room of one ahead of it."""
        prepares = []
        for program in front:
            env = host.envs.get(program.program_id)
            if env is None or env.released or env.state not in _UNPREPARED or env.needed_since_s is not None:
                continue
            if planned.preparing >= self.config.max_preparing:
                break
            if not host.room_for(env.resources, self.config.ahead_disk_fraction,
                                 planned.disk_bytes, planned.ports):
                break
            planned.prepare(env)
            prepares.append(PrepareEnv(env.program_id, "ahead"))
        return prepares


def _parked(env: EnvView, program: Program) -> bool:
    """The environment may be torn down without breaking a step in progress: no tool runs
    in it, nobody waits for it, and its program is in the queue, not bound and reasoning."""
    if env.in_use or env.needed_since_s is not None or env.released:
        return False
    return program.status is Status.PAUSED or program.phase is Phase.ACTING


def _short(host: ToolHostView, planned: _Planned) -> bool:
    """Does everything started, pending and planned exceed the host's capacity?"""
    if host.disk_capacity_bytes is not None and (
            host.disk_used_bytes + host.disk_pending_bytes + planned.disk_bytes > host.disk_capacity_bytes):
        return True
    return host.ports_capacity is not None and (
        host.ports_used + host.ports_pending + planned.ports > host.ports_capacity)
