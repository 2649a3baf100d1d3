"""What a policy sees (``ClusterView``) and what it may return (decisions).

The contract both worlds implement, so the same policy object decides in the
simulator and in the live proxy:

* A program's request becomes ready (a new program's first turn, or the next
  turn after its tool returns): the mechanism calls ``policy.route``.
  ``Dispatch(b)`` sends it to backend ``b`` now and makes the program ACTIVE
  on ``b``; ``Hold()`` puts the program in the global waiting queue
  (status PAUSED, backend None) until a ``Restore`` names it.
* On every tick (every dt) and at once after events that change what fits
  (arrival, request completed, program finished), the mechanism calls
  ``policy.decide(view, trigger)`` and applies the returned decisions in order:
  - ``Pause(p)``: an ACTING program is unbound at once (its KV becomes
    evictable); a REASONING program is *marked* and unbound when its
    in-flight request completes.
  - ``Restore(p, b)``: a PAUSED program becomes ACTIVE on ``b``; a held
    request is dispatched at once. ``b`` may differ from where it ran before
    (a migration).
  - ``Pin(p, until_s)``: keep p's cached KV unevictable until ``until_s`` or
    its next request, whichever comes first (Continuum).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Mapping, Union

from thunder.core.program import BackendId, Phase, Program, ProgramId, Status


@dataclass(frozen=True, slots=True)
class BackendView:
    """One data-parallel engine replica. Tokens, not blocks."""

    backend_id: BackendId
    capacity_tokens: int
    healthy: bool = True
    running_tokens: int = 0  # tokens held by requests running in the engine now
    running_requests: int = 0
    waiting_requests: int = 0


@dataclass(frozen=True, slots=True)
class ClusterView:
    """Read-only snapshot taken at ``now_s``. Terminated programs are absent."""

    now_s: float
    backends: tuple[BackendView, ...]
    programs: Mapping[ProgramId, Program] = field(default_factory=dict)

    def queued(self) -> list[Program]:
        """The global waiting queue: every PAUSED program, in no particular order."""
        return [p for p in self.programs.values() if p.status is Status.PAUSED]

    def healthy_backends(self) -> list[BackendView]:
        return [b for b in self.backends if b.healthy]


class TriggerKind(Enum):
    TICK = "tick"
    ARRIVAL = "arrival"  # a new program entered the queue
    REQUEST_DONE = "request_done"  # an LLM request completed; program now acting (or done)
    TOOL_DONE = "tool_done"  # a tool returned; the program's next request is ready
    RELEASE = "release"  # a program finished or was released


@dataclass(frozen=True, slots=True)
class Trigger:
    kind: TriggerKind
    program_id: ProgramId | None = None


TICK = Trigger(TriggerKind.TICK)


@dataclass(frozen=True, slots=True)
class Dispatch:
    """Send the ready request to ``backend``. Lower ``priority`` runs first in the
    engine's waiting queue; None means first come, first served."""

    backend: BackendId
    priority: float | None = None


@dataclass(frozen=True, slots=True)
class Hold:
    """Keep the request at the proxy: the program joins the waiting queue."""

    reason: str = ""


Route = Union[Dispatch, Hold]


@dataclass(frozen=True, slots=True)
class Pause:
    program_id: ProgramId


@dataclass(frozen=True, slots=True)
class Restore:
    program_id: ProgramId
    backend: BackendId


@dataclass(frozen=True, slots=True)
class Pin:
    program_id: ProgramId
    until_s: float


Decision = Union[Pause, Restore, Pin]

__all__ = [
    "BackendView", "ClusterView", "Decision", "Dispatch", "Hold", "Pause", "Phase", "Pin",
    "Program", "Restore", "Route", "Status", "TICK", "Trigger", "TriggerKind",
]
