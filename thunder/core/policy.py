"""The policy protocols: pure decisions over a ``ClusterView``.

A policy never reads a clock, sleeps, or touches SimPy or sockets: time is
``view.now_s``. It may keep its own bookkeeping (a round-robin cursor, running
tool-time estimates) as long as that state changes only through these calls,
so a replay of the same calls gives the same decisions.

What a mechanism (simulator or proxy) reads from a policy is all here: how often
to run its periodic control step (``interval_s``), whether to run the step before
routing a ready request (``checks_before_dispatch``), and the two calls.
"""

from __future__ import annotations

from typing import Protocol, Sequence

from thunder.core.environments import ToolDecision, ToolHostView
from thunder.core.program import Program
from thunder.core.view import ClusterView, Decision, Route, Trigger


class Policy(Protocol):
    """A scheduler: routes ready requests and pauses / restores / pins programs."""

    name: str

    @property
    def interval_s(self) -> float | None:
        """Seconds between periodic control steps (the paper's dt); None: events only."""
        ...

    @property
    def checks_before_dispatch(self) -> bool:
        """Run the control step, with the ready request's new prompt counted, before routing
        it (``DefaultThunderPolicy``); otherwise route first and step after (the paper's order)."""
        ...

    def route(self, view: ClusterView, program: Program) -> Route:
        """Where the ready request of ``program`` goes (``program.waiting`` is true)."""
        ...

    def decide(self, view: ClusterView, trigger: Trigger) -> Sequence[Decision]:
        """Periodic and event-driven control step: pauses, restores, pins."""
        ...


class ToolPolicy(Protocol):
    """A tool-resource policy: which environments to prepare and which to tear down."""

    name: str

    @property
    def interval_s(self) -> float:
        """Seconds between its periodic steps (it also runs after every scheduler step)."""
        ...

    def decide(self, cluster: ClusterView, host: ToolHostView) -> Sequence[ToolDecision]:
        """Preparations to start and environments to tear down, applied in order."""
        ...
