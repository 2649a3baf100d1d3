"""Tool environments (the T of paper Eq. 1): what a tool-resource policy sees and returns.

A program's tool environment is a sandbox with resources: disk bytes, ports,
processes, and the seconds it takes to prepare (pull an image, install
packages). Its lifecycle, driven by the mechanism (simulator or live
sandbox provider) on a policy's decisions::

    NONE --PrepareEnv--> PENDING --room on the host--> PREPARING --setup_s--> READY
      ^                     |                              |                    |
      +-----------------ReclaimEnv (cancel / tear down) ---+--------------------+--> RECLAIMED

Disk and ports are held from the start of preparation until reclaim.
A program cannot run its next step on the GPU until its environment is
READY: the mechanism holds it and sets ``needed_since_s``.

The contract, like the scheduler's (``thunder.core.view``): on every control
step the mechanism builds a ``ToolHostView`` next to the ``ClusterView`` and
calls ``tool_policy.decide(cluster, host)``; it applies the returned
decisions in order.
* ``PrepareEnv(p)``: start preparing p's environment (state NONE or
  RECLAIMED). If the host has no room for it, it waits in the host's FIFO
  (PENDING), as a real host waits for disk, and starts when room frees.
* ``ReclaimEnv(p)``: tear down p's environment (cancel it if PENDING or
  PREPARING) and return its disk and ports. The mechanism refuses while a
  tool runs in it (``in_use``) or while p is bound to a backend and
  reasoning: its next tool call is imminent.

One environment per program (keyed by program id): the traces carry one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Mapping, Union

from thunder.core.program import Phase, Program, ProgramId, Status


class EnvState(Enum):
    NONE = "none"  # never prepared
    PENDING = "pending"  # asked for; waits for disk or ports on the host
    PREPARING = "preparing"  # image pull / install running; resources held
    READY = "ready"
    RECLAIMED = "reclaimed"  # torn down; a live program's env may be prepared again


LIVE_STATES = frozenset({EnvState.PENDING, EnvState.PREPARING, EnvState.READY})
HOLDING_STATES = frozenset({EnvState.PREPARING, EnvState.READY})  # hold disk and ports


@dataclass(frozen=True, slots=True)
class EnvResources:
    """What one environment costs. Units: bytes, ports, processes, seconds."""

    disk_bytes: int
    ports: int = 0
    processes: int = 1
    setup_s: float = 0.0  # expected time to prepare it (the policy may plan with it)


@dataclass(frozen=True, slots=True)
class EnvView:
    """One program's environment at ``ToolHostView.now_s``.

    ``released``: the program terminated (or was released); its env only
    waits for teardown. ``needed_since_s``: the program is held because this
    env is not READY (it wants the GPU now). ``in_use``: a tool runs in it.
    ``last_used_s``: when a tool last ended in it, else when it became
    ready; None if never ready.
    """

    program_id: ProgramId
    state: EnvState
    resources: EnvResources
    released: bool = False
    needed_since_s: float | None = None
    in_use: bool = False
    last_used_s: float | None = None
    state_since_s: float = 0.0

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES

    def idle_for_s(self, now_s: float) -> float:
        """Seconds since last use; 0 while in use or never ready."""
        if self.in_use or self.last_used_s is None:
            return 0.0
        return max(0.0, now_s - self.last_used_s)


@dataclass(frozen=True, slots=True)
class ToolHostView:
    """Read-only snapshot of one tool host. ``None`` capacities mean unlimited.

    ``disk_used_bytes``/``ports_used`` count PREPARING and READY envs;
    ``disk_pending_bytes``/``ports_pending`` count PENDING ones (asked for,
    not yet started). ``envs`` holds every live program's env (state NONE
    included) and every released program's env that still holds resources.
    """

    now_s: float
    disk_capacity_bytes: int | None = None
    disk_used_bytes: int = 0
    disk_pending_bytes: int = 0
    ports_capacity: int | None = None
    ports_used: int = 0
    ports_pending: int = 0
    envs: Mapping[ProgramId, EnvView] = field(default_factory=dict)

    def room_for(self, resources: EnvResources, disk_fraction: float = 1.0,
                 extra_disk_bytes: int = 0, extra_ports: int = 0) -> bool:
        """Would ``resources`` fit after everything started and pending, plus the extras?

        ``disk_fraction`` caps the disk share this check may fill (a policy
        keeping headroom for environments that programs will need)."""
        if self.disk_capacity_bytes is not None:
            disk = self.disk_used_bytes + self.disk_pending_bytes + extra_disk_bytes + resources.disk_bytes
            if disk > self.disk_capacity_bytes * disk_fraction:
                return False
        if self.ports_capacity is not None:
            ports = self.ports_used + self.ports_pending + extra_ports + resources.ports
            if ports > self.ports_capacity:
                return False
        return True


@dataclass(frozen=True, slots=True)
class PrepareEnv:
    """Start preparing the program's environment. ``reason``: "needed" or "ahead"."""

    program_id: ProgramId
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ReclaimEnv:
    """Tear down the program's environment. ``reason``: "released", "idle" or "make-room"."""

    program_id: ProgramId
    reason: str = ""


ToolDecision = Union[PrepareEnv, ReclaimEnv]

__all__ = ["EnvResources", "EnvState", "EnvView", "HOLDING_STATES", "LIVE_STATES", "PrepareEnv",
           "ReclaimEnv", "ToolDecision", "ToolHostView"]


# -- the rules both mechanisms apply (one definition each) ----------------------------------


def env_in_use(program: Program | None) -> bool:
    """A tool runs in the program's environment: from the end of an LLM call to the
    program's next request (ACTING after at least one step), paused or not."""
    return program is not None and program.phase is Phase.ACTING and program.steps_done > 0


def reclaim_refused(env: EnvView, program: Program | None) -> bool:
    """A teardown the mechanism refuses: the environment is in use, or its program is bound
    to a backend and reasoning (its next tool call comes as soon as the answer does). An
    environment of a released program may always go."""
    if env.released:
        return False
    bound_reasoning = (program is not None and program.status is Status.ACTIVE
                       and program.phase is Phase.REASONING)
    return bound_reasoning or env_in_use(program)
