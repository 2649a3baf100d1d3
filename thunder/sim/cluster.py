"""SimCluster: the mechanism that runs a policy against simulated replicas.

It owns the mutable truth about every program, builds the read-only
``ClusterView`` a policy sees, applies the decisions it returns (the contract
in ``thunder.core.view``), and records every step and decision for the metrics.
Nothing here decides: routing, pausing and restoring come from the policy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from types import MappingProxyType
from typing import Any, Callable, Protocol

import simpy

from thunder.core.applier import ControlHook, DecisionApplier, note_dispatch
from thunder.core.policy import Policy
from thunder.core.program import Phase, Program, Status
from thunder.core.records import DecisionRow, program_row, step_row
from thunder.core.view import TICK, ClusterView, Dispatch, Trigger, TriggerKind
from thunder.sim.engine import Replica, Request
from thunder.traces import TraceProgram


class SimulationError(RuntimeError):
    """The run cannot go on as configured (e.g. a request larger than a replica)."""


@dataclass(slots=True, eq=False)
class SimProgram:
    """Mechanism-side state of one program (mutable; never shown to a policy)."""

    trace: TraceProgram
    program_id: str
    arrived_s: float
    step_index: int = 0
    epoch: int = 0
    computed_high: int = 0  # tokens of the current epoch whose KV was computed before
    held: bool = False  # its ready request is held at the proxy
    request_done: simpy.Event | None = None
    ready_s: float = 0.0
    pinned_on: int | None = None
    last_backend: int | None = None
    started_s: float | None = None
    pauses: int = 0
    restores: int = 0
    migrations: int = 0
    queue_s: float = 0.0


@dataclass(slots=True)
class RunRecords:
    """Rows for the result tables, in the schema of ``thunder.core.records`` (shared with the live runtime)."""

    steps: list[dict[str, Any]] = field(default_factory=list)
    programs: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[DecisionRow] = field(default_factory=list)
    timeseries: list[dict[str, Any]] = field(default_factory=list)


class DispatchGate(Protocol):
    """What may hold a ready request before it reaches an engine (``thunder.sim.tool_cluster``)."""

    def arrive(self, program: SimProgram) -> None: ...

    def admit(self, program: SimProgram, priority: float | None) -> bool:
        """True: dispatch now; False: the gate holds it and dispatches it later."""
        ...


class SimCluster(DecisionApplier):
    def __init__(self, env: simpy.Environment, replicas: list[Replica], policy: Policy,
                 on_program_end: Callable[[SimProgram], None] | None = None) -> None:
        self.env = env
        self.replicas = replicas
        self.policy = policy
        self.programs: dict[str, SimProgram] = {}
        self.views: dict[str, Program] = {}
        self._readonly_views = MappingProxyType(self.views)
        self.records = RunRecords()
        self.on_program_end = on_program_end
        self.max_request_tokens = min(r.spec.capacity_tokens for r in replicas)
        self.control_steps = 0
        self.before_control: list[ControlHook] = []
        self.after_control: list[ControlHook] = []
        self.gate: DispatchGate | None = None  # tool environments, when modelled (``SimTools``)
        self._backends_at = -1  # sum of the replicas' change counters when _backends was built
        self._backends: tuple = ()

    # -- snapshot ----------------------------------------------------------------

    def snapshot(self) -> ClusterView:
        changes = sum([r.changes for r in self.replicas])  # each only grows: equal sums, no change
        if changes != self._backends_at:
            self._backends_at = changes
            self._backends = tuple([r.backend_view() for r in self.replicas])
        backends = self._backends
        # The mapping is read-only and valid for the duration of one policy call.
        return ClusterView(now_s=self.env.now, backends=backends, programs=self._readonly_views)

    # -- lifecycle events (called by the agent processes and the engines) -------

    def arrive(self, trace: TraceProgram) -> SimProgram:
        now = self.env.now
        program = SimProgram(trace=trace, program_id=trace.program_id, arrived_s=now)
        self.programs[program.program_id] = program
        self.views[program.program_id] = Program(
            program_id=program.program_id, context_tokens=trace.steps[0].prompt_tokens,
            phase=Phase.REASONING, status=Status.PAUSED, backend=None, phase_since_s=now,
            arrived_s=now, steps_done=0, waiting=False,
            shared_prefix_id=trace.shared_prefix_id, shared_prefix_tokens=trace.shared_prefix_tokens,
            paused_since_s=now, group_id=trace.group_id)
        if self.gate is not None:
            self.gate.arrive(program)
        return program

    def request_ready(self, program: SimProgram) -> simpy.Event:
        """The program's next LLM call is ready; returns the event of its completion."""
        now = self.env.now
        step = program.trace.steps[program.step_index]
        largest = step.prompt_tokens + max(step.output_tokens, 1)
        if largest > self.max_request_tokens:
            raise SimulationError(
                f"program {program.program_id} step {program.step_index}: {largest} tokens exceed a "
                f"replica's KV capacity of {self.max_request_tokens} tokens (scale the trace's tokens "
                "or choose a larger preset)")
        if step.context_reset:
            program.epoch += 1
            program.computed_high = 0
        program.ready_s = now
        program.request_done = self.env.event()
        view = self._update(program.program_id, phase=Phase.REASONING, phase_since_s=now, waiting=True,
                            context_tokens=step.prompt_tokens, max_output_tokens=step.max_tokens)
        trigger = Trigger(TriggerKind.ARRIVAL if program.step_index == 0 else TriggerKind.TOOL_DONE,
                          program.program_id)
        if self.policy.checks_before_dispatch:
            # The check sees the new prompt before anything reaches the engine: it may
            # pause others to make room, or hold this request (pause it) until it fits.
            program.held = True
            self.control(trigger)
            if program.held:  # not already sent by a restore in that step
                self._route(program, self.views[program.program_id])
            return program.request_done
        self._route(program, view)
        self.control(trigger)
        return program.request_done

    def _route(self, program: SimProgram, view: Program) -> None:
        route = self.policy.route(self.snapshot(), view)
        if isinstance(route, Dispatch):
            self._activate(program, route.backend)
            self.dispatch(program, route.backend, route.priority)
        else:
            program.held = True
            if view.status is Status.ACTIVE:
                self._pause(program, reason=route.reason or "held")

    def _on_request_done(self, program: SimProgram, request: Request) -> None:
        now = self.env.now
        step = program.trace.steps[program.step_index]
        program.computed_high = max(program.computed_high, request.computed)
        self._record_step(program, request, step.tool, step.tool_s)
        program.step_index += 1
        last = program.step_index >= len(program.trace.steps)
        view = self.views[program.program_id]
        context = request.prompt_tokens + request.output_tokens
        view = self._update(program.program_id, phase=Phase.ACTING, phase_since_s=now, waiting=False,
                            steps_done=program.step_index, context_tokens=context, tool=step.tool,
                            last_output_tokens=request.output_tokens, max_output_tokens=None)
        if view.marked_for_pause and not last:
            self._pause(program, reason="marked")
        event = program.request_done
        assert event is not None
        if last:
            self._terminate(program)
            self.control(Trigger(TriggerKind.RELEASE, program.program_id))
        else:
            self.control(Trigger(TriggerKind.REQUEST_DONE, program.program_id))
        event.succeed()

    def _terminate(self, program: SimProgram) -> None:
        del self.views[program.program_id]
        del self.programs[program.program_id]
        self.records.programs.append(program_row(program, finished_s=self.env.now, steps=program.step_index,
                                                 group_id=program.trace.group_id))
        if self.on_program_end is not None:
            self.on_program_end(program)

    # -- control: the policy decides, we apply ------------------------------------

    def tick(self) -> None:
        self.control(TICK)

    # -- what the decision contract needs from the simulated world (DecisionApplier) ----

    def now(self) -> float:
        return self.env.now

    def _in_engine(self, program: SimProgram) -> bool:
        return not program.held  # a reasoning program is either held at the proxy or in an engine

    def _dispatch_held(self, program: SimProgram, backend: int) -> None:
        if program.held:
            self.dispatch(program, backend, None)

    def _pin(self, program: SimProgram, backend: int, until_s: float) -> None:
        self.replicas[backend].pin(self._program_key(program), until_s)
        program.pinned_on = backend
        self._log("pin", program.program_id, backend)

    def dispatch(self, program: SimProgram, backend: int, priority: float | None) -> None:
        """Send the program's ready request to ``backend`` (unless the gate holds it first)."""
        if self.gate is not None and not self.gate.admit(program, priority):
            return  # held at the proxy; the gate dispatches it when it may go
        now = self.env.now
        step = program.trace.steps[program.step_index]
        trace = program.trace
        replica = self.replicas[backend]
        shared_blocks = trace.shared_prefix_tokens // replica.block_size if trace.shared_prefix_id else 0
        if program.pinned_on is not None:
            # On the same replica the pin holds until admission takes the blocks (a pin
            # lasts until the next request is served); elsewhere it is useless now.
            if program.pinned_on != backend:
                self.replicas[program.pinned_on].cache.unpin(self._program_key(program))
            program.pinned_on = None
        request = Request(
            program_id=program.program_id, step_index=program.step_index,
            prompt_tokens=step.prompt_tokens, output_tokens=max(step.output_tokens, 1),
            program_key=self._program_key(program),
            shared_key=("s", trace.shared_prefix_id) if shared_blocks else None,
            shared_blocks=shared_blocks, prior_tokens=min(self._cacheable(program.computed_high, replica.block_size),
                                                            step.prompt_tokens),
            priority=priority if priority is not None else 0.0,
            on_done=partial(self._on_request_done, program))
        note_dispatch(program, backend, program.ready_s, now)
        program.held = False
        self._update(program.program_id, waiting=False)
        replica.submit(request)

    @staticmethod
    def _cacheable(tokens: int, block_size: int) -> int:
        """Tokens in full blocks: only those can be cached, so only those count as recompute
        when prefilled again (a partial last block is re-prefilled on every turn by design)."""
        return tokens // block_size * block_size

    @staticmethod
    def _program_key(program: SimProgram) -> tuple:
        return ("p", program.program_id, program.epoch)

    # -- records ----------------------------------------------------------------------

    def _log(self, action: str, program_id: str, backend: int | None, reason: str = "") -> None:
        self.records.decisions.append((self.env.now, action, program_id, backend, reason))

    def _record_step(self, program: SimProgram, request: Request, tool: str | None,
                     tool_s: float | None) -> None:
        self.records.steps.append(step_row(
            program_id=program.program_id, step=request.step_index, backend=program.last_backend,
            ready_s=program.ready_s, dispatched_s=request.submitted_s,
            engine_arrival_s=request.engine_arrival_s, admitted_s=request.admitted_s,
            first_token_s=request.first_token_s, done_s=request.done_s,
            prompt_tokens=request.prompt_tokens, cached_tokens=request.hit_tokens or 0,
            recompute_tokens=request.recompute_tokens, output_tokens=request.output_tokens,
            preemptions=request.preemptions, tool=tool, tool_s=tool_s))
