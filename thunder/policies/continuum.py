"""Continuum: pin an acting program's KV for a predicted tool time (TTL).

Source: Continuum (Li et al., arXiv 2511.02230). Two mechanisms are kept:

* Program-level first come, first served: every request of a program is
  dispatched with ``priority = program.arrived_s``, so the engine's waiting
  queue runs older programs' requests first.
* TTL pinning: when a request completes and its program starts a tool call,
  the program's KV is pinned for a time-to-live predicted from that tool's
  past durations, if the tool is predicted to be short enough.

Routing is vLLM's sticky rule (back to the previous backend, new programs to
the least-loaded one); unhealthy backends are skipped. Continuum never
holds, pauses or restores.

TTL rule (our simplification; Continuum derives an optimal TTL from a cost
model of reload cost versus queueing benefit over the tool-time
distribution). Per tool name we keep the last ``window`` observed durations
(tool start to tool return, seconds):

* predicted = the ``quantile`` of that window (nearest rank), or
  ``unseen_tool_s`` for a tool never seen finishing;
* if predicted > ``pin_threshold_s`` no pin: a tool that long makes keeping
  the KV costlier than recomputing it;
* otherwise ``Pin(p, now + min(max_ttl_s, margin * predicted))``.

Bookkeeping: the acting start (``phase_since_s``) and tool name are taken at
REQUEST_DONE, because at TOOL_DONE the program may already be reasoning
again; they are dropped at TOOL_DONE and RELEASE.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from thunder.core.options import option, require
from thunder.core.program import Phase, Program, ProgramId
from thunder.core.view import ClusterView, Decision, Dispatch, Hold, Pin, Route, Trigger, TriggerKind
from thunder.policies.routing import sticky


@dataclass(frozen=True, slots=True)
class ContinuumConfig:
    pin_threshold_s: float = option(10.0, "pin only tools predicted to take at most this long (s)")
    max_ttl_s: float = option(30.0, "cap on any TTL (s)")
    margin: float = option(1.0, "TTL = margin * predicted tool time")
    quantile: float = option(0.9, "predicted tool time = this quantile of recent durations")
    window: int = option(64, "recent durations kept per tool")
    unseen_tool_s: float = option(2.0, "predicted time of a tool never seen finishing (s)")

    def __post_init__(self) -> None:
        require(self.pin_threshold_s >= 0, "pin_threshold_s must be >= 0")
        require(self.max_ttl_s >= 0, "max_ttl_s must be >= 0")
        require(self.margin > 0, "margin must be > 0")
        require(0 < self.quantile <= 1, "quantile must be in (0, 1]")
        require(self.window >= 1, "window must be >= 1")
        require(self.unseen_tool_s >= 0, "unseen_tool_s must be >= 0")


class ToolDurations:
    """Sliding windows of observed tool durations, one per tool name."""

    def __init__(self, window: int) -> None:
        self._window = window
        self._seen: dict[str | None, deque[float]] = {}

    def observe(self, tool: str | None, duration_s: float) -> None:
        recent = self._seen.setdefault(tool, deque(maxlen=self._window))
        recent.append(max(0.0, duration_s))

    def quantile(self, tool: str | None, q: float) -> float | None:
        """Nearest-rank quantile of the tool's recent durations; None if unseen."""
        recent = self._seen.get(tool)
        if not recent:
            return None
        ordered = sorted(recent)
        rank = max(1, math.ceil(q * len(ordered)))
        return ordered[rank - 1]


class TtlPinningPolicy:
    """Sticky routing, program-level FCFS, and tool-aware KV pinning."""

    name = "continuum"
    interval_s = None  # event-driven only: no periodic control step
    checks_before_dispatch = False

    def __init__(self, config: ContinuumConfig = ContinuumConfig()) -> None:
        self.config = config
        self.durations = ToolDurations(config.window)
        self._acting: dict[ProgramId, tuple[str | None, float]] = {}  # pid -> (tool, start_s)

    def route(self, view: ClusterView, program: Program) -> Route:
        backend = sticky(view.backends, program)
        if backend is None:
            return Hold("no healthy backend")
        return Dispatch(backend, priority=program.arrived_s)

    def decide(self, view: ClusterView, trigger: Trigger) -> tuple[Decision, ...]:
        pid = trigger.program_id
        if pid is None:
            return ()
        if trigger.kind is TriggerKind.REQUEST_DONE:
            return self._on_request_done(view, pid)
        if trigger.kind is TriggerKind.TOOL_DONE:
            self._on_tool_done(view, pid)
        elif trigger.kind is TriggerKind.RELEASE:
            self._acting.pop(pid, None)
        return ()

    def predicted_tool_s(self, tool: str | None) -> float:
        seen = self.durations.quantile(tool, self.config.quantile)
        return self.config.unseen_tool_s if seen is None else seen

    def _on_request_done(self, view: ClusterView, pid: ProgramId) -> tuple[Decision, ...]:
        program = view.programs.get(pid)
        if program is None or program.phase is not Phase.ACTING:
            return ()  # finished, or no tool call follows
        self._acting[pid] = (program.tool, program.phase_since_s)
        predicted_s = self.predicted_tool_s(program.tool)
        if predicted_s > self.config.pin_threshold_s:
            return ()
        ttl_s = min(self.config.max_ttl_s, self.config.margin * predicted_s)
        return (Pin(pid, view.now_s + ttl_s),)

    def _on_tool_done(self, view: ClusterView, pid: ProgramId) -> None:
        started = self._acting.pop(pid, None)
        if started is not None:
            tool, start_s = started
            self.durations.observe(tool, view.now_s - start_s)
