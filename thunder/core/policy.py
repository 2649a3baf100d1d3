"""The Policy protocol: pure decisions over a ``ClusterView``.

A policy never reads a clock, sleeps, or touches SimPy or sockets: time is
``view.now_s``. It may keep its own bookkeeping (a round-robin cursor, running
tool-time estimates) as long as that state changes only through these calls,
so a replay of the same calls gives the same decisions.
"""

from __future__ import annotations

from typing import Protocol, Sequence

from thunder.core.view import ClusterView, Decision, Route, Trigger
from thunder.core.program import Program


class Policy(Protocol):
    name: str

    def route(self, view: ClusterView, program: Program) -> Route:
        """Where the ready request of ``program`` goes (``program.waiting`` is true)."""
        ...

    def decide(self, view: ClusterView, trigger: Trigger) -> Sequence[Decision]:
        """Periodic and event-driven control step: pauses, restores, pins."""
        ...
