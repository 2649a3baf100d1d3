"""LiveCluster: the mechanism that runs a policy in front of live vLLM backends.

The live twin of ``thunder.sim.cluster.SimCluster``: it owns the mutable
truth about every program, builds the read-only ``ClusterView`` a policy
sees, applies the decisions it returns (the contract in ``thunder.core.view``),
and records every step and decision. Nothing here decides, and nothing here
does I/O or touches asyncio: the proxy reports events (a request is ready,
done, failed; a program is released; a backend changed) and is told back
through two callbacks when a held request may go (``on_dispatch``) or must
fail (``on_reject``). Time comes from an injected ``clock`` (seconds), so
tests drive it with a fake one.

Live semantics (where the simulator knows more than a proxy can):
* A program is REASONING while a request of it is in flight or held, and
  ACTING from the moment its response completed (``phase_since_s``).
* ``context_tokens`` counts the request ready or in flight: prompt +
  completion tokens of the last response (vLLM's ``usage``, exact) plus what
  the new request adds (its size estimate less the previous request's: the
  tool's result), as the simulator counts the new prompt; before any
  response, the caller's estimate. When the response arrives, its usage.
* Several requests of one program may be in flight at once; a Pause of a
  reasoning program is applied when the last of them completes.
"""

from __future__ import annotations

import logging
from types import MappingProxyType
from typing import Any, Callable, Protocol, Sequence

from thunder.core.applier import ControlHook, DecisionApplier, note_dispatch
from thunder.core.policy import Policy
from thunder.core.program import BackendId, Phase, Program, ProgramId, Status
from thunder.core.records import program_row
from thunder.core.view import TICK, BackendView, ClusterView, Decision, Dispatch, Trigger, TriggerKind
from thunder.runtime.records import LiveRecords, step_row
from thunder.runtime.state import (NO_BACKEND, RELEASED, BackendState, DispatchHold, LiveProgram, Ticket,
                                   TicketState, Usage)

log = logging.getLogger(__name__)


class ToolSide(Protocol):
    """What the cluster asks of its sandboxes, when they are on (``LiveTools``)."""

    def ended(self, program_id: ProgramId) -> None: ...

    def release_unknown(self, program_id: ProgramId) -> bool: ...

    def reclaim_idle(self, idle_timeout_s: float) -> list[ProgramId]: ...


class LiveCluster(DecisionApplier):
    def __init__(self, policy: Policy, backends: Sequence[BackendState], clock: Callable[[], float],
                 records: LiveRecords | None = None, on_dispatch: Callable[[Ticket], None] | None = None,
                 on_reject: Callable[[Ticket, str], None] | None = None) -> None:
        self.policy = policy
        self.clock = clock
        self.backends = list(backends)
        self.records = records if records is not None else LiveRecords()
        self.programs: dict[ProgramId, LiveProgram] = {}
        self.views: dict[ProgramId, Program] = {}
        self._readonly_views = MappingProxyType(self.views)
        self._running_tokens = [0] * len(self.backends)
        self._running_requests = [0] * len(self.backends)
        self._request_ids = 0
        # Weight sync (``hold_dispatches``): while set, nothing is sent to an engine;
        # requests the policy lets go wait, bound to their backend, until resumed.
        self.dispatch_hold: DispatchHold | None = None
        self.on_dispatch: Callable[[Ticket], None] = on_dispatch or (lambda ticket: None)
        self.on_reject: Callable[[Ticket, str], None] = on_reject or (lambda ticket, reason: None)
        self.control_steps = 0
        self.before_control: list[ControlHook] = []
        self.after_control: list[ControlHook] = []
        self.tools: ToolSide | None = None  # sandboxes, when on (``thunder.runtime.tool_cluster.LiveTools``)

    # -- snapshot ----------------------------------------------------------------

    def snapshot(self) -> ClusterView:
        backends = tuple(
            BackendView(backend_id=i, capacity_tokens=b.capacity_tokens, healthy=b.healthy,
                        running_tokens=self._running_tokens[i], running_requests=self._running_requests[i],
                        waiting_requests=b.waiting_requests)
            for i, b in enumerate(self.backends))
        # Read-only and valid for the duration of one policy call.
        return ClusterView(now_s=self.clock(), backends=backends, programs=self._readonly_views)

    def any_healthy(self) -> bool:
        return any(b.healthy for b in self.backends)

    def _owner(self, ticket: Ticket) -> LiveProgram | None:
        """The ticket's program if it still exists: a program released and then
        named again is a new program, and the old one's requests are not its."""
        program = self.programs.get(ticket.program_id)
        return program if program is not None and program is ticket.owner else None

    # -- events reported by the proxy ------------------------------------------------

    def request_ready(self, program_id: ProgramId | None, estimate_tokens: int,
                      tool: str | None = None, group_id: str | None = None,
                      max_tokens: int | None = None) -> Ticket:
        """A client request arrived; registers its program if new and routes it.
        ``program_id=None`` makes a one-turn program, released when the request ends.
        ``tool``: the tool the client will run after the response (optional hint).
        ``group_id``: the program's rollout group; ``max_tokens``: the request's output cap."""
        now = self.clock()
        self._request_ids += 1
        program = self.programs.get(program_id) if program_id is not None else None
        new = program is None
        if program is None:
            program = self._register(program_id, estimate_tokens, now)
        if group_id is not None and program.group_id is None:
            program.group_id = group_id
        view = self.views[program.program_id]
        was_acting = view.phase is Phase.ACTING
        if was_acting and program.last_step is not None:
            program.last_step["tool_s"] = now - program.last_step["done_s"]
        ticket = Ticket(self._request_ids, program.program_id, view.steps_done, now, program.known_tokens,
                        tool=tool, owner=program)
        program.last_seen_s = now
        changes: dict[str, Any] = {}
        if program.known_tokens and was_acting:
            # The new prompt: the last response's prompt (usage, exact) plus what this request
            # adds to it (its estimate less the last one's: that answer and the tool's result),
            # and never less than what the last response left.
            added = estimate_tokens - program.known_estimate
            changes["context_tokens"] = max(1, program.known_tokens, program.known_prompt_tokens + added)
        self._update(program.program_id, phase=Phase.REASONING, waiting=True,
                     phase_since_s=now if was_acting or new else view.phase_since_s,
                     max_output_tokens=max_tokens, group_id=program.group_id, **changes)
        ticket.estimate_tokens = estimate_tokens
        trigger = Trigger(TriggerKind.ARRIVAL if new else TriggerKind.TOOL_DONE, program.program_id)
        if (new or was_acting) and self.policy.checks_before_dispatch:
            # The check sees the new prompt before the request goes anywhere; a restore in
            # that step sends it, a pause keeps it held, else it is routed as usual.
            program.held.append(ticket)
            self.control(trigger)
            if ticket in program.held and self._owner(ticket) is program:
                program.held.remove(ticket)
                self._route(program, ticket)
            return ticket
        self._route(program, ticket)
        if new or was_acting:
            self.control(trigger)
        return ticket

    def _register(self, program_id: ProgramId | None, estimate_tokens: int, now: float) -> LiveProgram:
        one_turn = program_id is None
        if program_id is None:
            program_id = f"one-turn-{self._request_ids}"
            while program_id in self.programs:  # a client may have chosen that name itself
                program_id += "'"
        program = LiveProgram(program_id=program_id, arrived_s=now, one_turn=one_turn, last_seen_s=now)
        self.programs[program_id] = program
        self.views[program_id] = Program(
            program_id=program_id, context_tokens=max(1, estimate_tokens), phase=Phase.REASONING,
            status=Status.PAUSED, backend=None, phase_since_s=now, arrived_s=now, steps_done=0,
            paused_since_s=now)
        return program

    def _route(self, program: LiveProgram, ticket: Ticket) -> None:
        view = self.views[program.program_id]
        route = self.policy.route(self.snapshot(), view)
        if isinstance(route, Dispatch):
            self._activate(program, route.backend)
            self._dispatch(program, ticket, route.backend)
            return
        ticket.hold_reason = route.reason or "held"
        program.held.append(ticket)
        if view.status is Status.ACTIVE:
            if program.in_flight == 0:
                self._pause(program, reason=ticket.hold_reason)
            elif not view.marked_for_pause:
                self._update(program.program_id, marked_for_pause=True)  # unbound when in flight ends

    def first_token(self, ticket: Ticket) -> None:
        ticket.first_token_s = self.clock()

    def request_done(self, ticket: Ticket, usage: Usage | None, release: bool = False) -> None:
        """The response was fully delivered; ``usage`` is None if it carried none.
        ``release``: the client said this was its program's last request."""
        if ticket.state is not TicketState.DISPATCHED:
            return
        now = self.clock()
        self._undispatch(ticket)
        self.records.outcomes["ok"] += 1
        row = step_row(ticket, usage, now, self._block_size(ticket.backend))
        self.records.step(row)
        program = self._owner(ticket)
        if program is None:
            return  # released while its request ran
        program.in_flight -= 1
        program.last_step, program.last_seen_s = row, now
        changes: dict[str, Any] = {"steps_done": self.views[program.program_id].steps_done + 1,
                                   "tool": ticket.tool}
        if usage is not None:
            program.known_tokens = usage.prompt_tokens + usage.completion_tokens
            program.known_estimate, program.known_prompt_tokens = ticket.estimate_tokens, usage.prompt_tokens
            changes["context_tokens"] = max(1, program.known_tokens)
            changes["last_output_tokens"] = usage.completion_tokens
        if program.in_flight == 0 and not program.held:
            changes.update(phase=Phase.ACTING, phase_since_s=now, waiting=False)
        view = self._update(program.program_id, **changes)
        if program.one_turn or release:
            self._reject_held(program, RELEASED)
            self._terminate(program)
            self.control(Trigger(TriggerKind.RELEASE, program.program_id))
            return
        if view.marked_for_pause and program.in_flight == 0:
            self._pause(program, reason="marked")
        self.control(Trigger(TriggerKind.REQUEST_DONE, program.program_id))

    def request_failed(self, ticket: Ticket, outcome: str) -> None:
        """The request ended without a usable response (client gone, hold timeout,
        backend error). The program returns to ACTING; a program that never
        completed a step, or a one-turn one, is dropped: nothing of it remains."""
        if ticket.state is TicketState.FINISHED:
            return
        program = self._owner(ticket)
        if ticket.state is TicketState.HELD:
            if program is not None:
                program.held.remove(ticket)
        else:
            self._undispatch(ticket)
            if program is not None:
                program.in_flight -= 1
        ticket.state = TicketState.FINISHED
        self.records.outcomes[outcome] += 1
        if program is not None:
            self._settle(program)

    def _settle(self, program: LiveProgram) -> None:
        """After a request left without a response: back to ACTING when nothing of
        the program is in flight or held; dropped if it never completed a step."""
        now = program.last_seen_s = self.clock()
        if program.in_flight or program.held:
            if not program.held:
                self._update(program.program_id, waiting=False)
            return
        view = self.views[program.program_id]
        if program.one_turn or view.steps_done == 0:
            self._terminate(program)
            self.control(Trigger(TriggerKind.RELEASE, program.program_id))
            return
        view = self._update(program.program_id, phase=Phase.ACTING, phase_since_s=now, waiting=False)
        if view.marked_for_pause and view.status is Status.ACTIVE:
            self._pause(program, reason="marked")
        self.control(Trigger(TriggerKind.REQUEST_DONE, program.program_id))

    def requeue(self, ticket: Ticket) -> bool:
        """Its backend refused the connection: route the request again. False if
        its program is gone (the caller then fails the request)."""
        program = self._owner(ticket)
        if ticket.state is not TicketState.DISPATCHED or program is None:
            return False
        self._undispatch(ticket)
        program.in_flight -= 1
        ticket.state, ticket.backend, ticket.dispatched_s = TicketState.HELD, None, None
        self._update(program.program_id, waiting=True)
        self._route(program, ticket)
        self.control(TICK)
        return True

    def release(self, program_id: ProgramId) -> bool:
        """End a program (client's release call). Its held requests fail; requests in
        flight run to completion and are recorded. False if unknown (to the tools too)."""
        program = self.programs.get(program_id)
        if program is None:
            return self.tools is not None and self.tools.release_unknown(program_id)
        self._reject_held(program, RELEASED)
        self._terminate(program)
        self.control(Trigger(TriggerKind.RELEASE, program_id))
        return True

    def reclaim_idle(self, idle_timeout_s: float) -> list[ProgramId]:
        """Release programs with nothing in flight or held and no request for
        ``idle_timeout_s``: their client is presumed gone without a release."""
        now = self.clock()
        stale = [p for p in self.programs.values()
                 if not p.in_flight and not p.held and now - p.last_seen_s > idle_timeout_s]
        for program in stale:
            log.warning("program %s idle for %.0f s without release: reclaimed", program.program_id,
                        now - program.last_seen_s)
            self._log("reclaim", program.program_id, self.views[program.program_id].backend, "idle timeout")
            self._terminate(program)
            self.control(Trigger(TriggerKind.RELEASE, program.program_id))
        sandboxes_only = self.tools.reclaim_idle(idle_timeout_s) if self.tools is not None else []
        return [p.program_id for p in stale] + sandboxes_only

    def update_backend(self, backend_id: BackendId, state: BackendState) -> None:
        """New adapter reading. A change of health or capacity runs a control step;
        when no backend is healthy any more, every held request fails at once."""
        before = self.backends[backend_id]
        self.backends[backend_id] = state
        if before.healthy == state.healthy and before.capacity_tokens == state.capacity_tokens:
            return
        if before.healthy and not state.healthy:
            log.warning("backend %d (%s) is unhealthy: %s", backend_id, state.url, state.reason)
        elif state.healthy and not before.healthy:
            log.info("backend %d (%s) is healthy", backend_id, state.url)
        if not self.any_healthy():
            self.reject_held(NO_BACKEND)
        self.control(TICK)

    def reject_held(self, reason: str) -> None:
        """Fail every held request now (no backend left, or the proxy stops)."""
        for program in [p for p in self.programs.values() if p.held]:
            self._reject_held(program, reason)
            if program.program_id in self.programs:
                self._settle(program)

    def _reject_held(self, program: LiveProgram, reason: str) -> None:
        for ticket in program.held:
            ticket.state = TicketState.FINISHED
            self.records.outcomes["rejected"] += 1
            self.on_reject(ticket, reason)
        program.held.clear()

    # -- weight sync: hold every dispatch, then resume --------------------------------

    def hold_dispatches(self, reason: str) -> bool:
        """Stop sending requests to the engines (a trainer updates their weights).
        Requests in flight run on; new and restored ones wait, still counted as the
        policy's (bound, held). False if already holding."""
        if self.dispatch_hold is not None:
            return False
        self.dispatch_hold = DispatchHold(reason=reason, since_s=self.clock())
        self._log("sync_pause", "*", None, reason)
        return True

    def resume_dispatches(self, why: str = "resumed") -> DispatchHold | None:
        """Send what waited for the weight sync, each to the backend its program is
        bound to, then run a control step. None if dispatches were not held."""
        hold, self.dispatch_hold = self.dispatch_hold, None
        if hold is None:
            return None
        hold.until_s = self.clock()
        self.records.sync_pauses += 1
        self.records.sync_paused_s += hold.until_s - hold.since_s
        self._log("sync_resume", "*", None, f"{why} after {hold.until_s - hold.since_s:.3f} s, "
                                            f"{hold.held_requests} requests held")
        for program in [p for p in self.programs.values() if p.held]:
            view = self.views[program.program_id]
            if view.status is Status.ACTIVE and view.backend is not None:
                self._dispatch_held(program, view.backend)
        self.control(TICK)
        return hold

    def expire_dispatch_hold(self, max_s: float) -> DispatchHold | None:
        """Resume on its own a hold older than ``max_s``: a trainer that died mid-sync
        must not stop the proxy for good."""
        if self.dispatch_hold is None or self.clock() - self.dispatch_hold.since_s <= max_s:
            return None
        log.warning("dispatches held for weight sync longer than %.0f s: resumed", max_s)
        return self.resume_dispatches(why="expired")

    def in_flight_requests(self) -> int:
        return sum(self._running_requests)

    # -- control: the policy decides, we apply -----------------------------------------

    def tick(self) -> list[Decision]:
        return self.control(TICK)

    # -- what the decision contract needs from the live world (DecisionApplier) --------

    def now(self) -> float:
        return self.clock()

    def _in_engine(self, program: LiveProgram) -> bool:
        return program.in_flight > 0

    def _dispatch_held(self, program: LiveProgram, backend: BackendId) -> None:
        for ticket in list(program.held):
            self._dispatch(program, ticket, backend)

    def _pin(self, program: LiveProgram, backend: BackendId, until_s: float) -> None:
        # vLLM has no API to make cached blocks unevictable: recorded, not enforced.
        program.pinned_until_s = until_s
        self._log("pin", program.program_id, backend, "recorded only: not enforceable on vLLM")

    def _dispatch(self, program: LiveProgram, ticket: Ticket, backend: BackendId) -> None:
        if self.dispatch_hold is not None:
            # Weight sync: the policy's choice stands (the program stays bound to
            # ``backend``), the request waits at the proxy until dispatches resume.
            ticket.hold_reason = self.dispatch_hold.reason
            if ticket not in program.held:
                program.held.append(ticket)
            if not ticket.sync_held:
                ticket.sync_held = True
                self.dispatch_hold.held_requests += 1
            return
        now = self.clock()
        if ticket in program.held:
            program.held.remove(ticket)
        ticket.state, ticket.backend, ticket.dispatched_s = TicketState.DISPATCHED, backend, now
        ticket.tokens = self.views[program.program_id].context_tokens
        self._running_tokens[backend] += ticket.tokens
        self._running_requests[backend] += 1
        program.in_flight += 1
        waited = note_dispatch(program, backend, ticket.ready_s, now)
        self._update(program.program_id, waiting=bool(program.held))
        self.records.queue_wait.observe(waited)
        self.on_dispatch(ticket)

    def _undispatch(self, ticket: Ticket) -> None:
        backend = ticket.backend
        assert backend is not None
        self._running_tokens[backend] -= ticket.tokens
        self._running_requests[backend] -= 1
        ticket.state = TicketState.FINISHED

    def _terminate(self, program: LiveProgram) -> None:
        view = self.views.pop(program.program_id)
        del self.programs[program.program_id]
        self.records.programs.append(program_row(program, finished_s=self.clock(), steps=view.steps_done,
                                                 group_id=program.group_id))
        if self.tools is not None:
            self.tools.ended(program.program_id)

    # -- records ----------------------------------------------------------------------

    def _block_size(self, backend: BackendId | None) -> int:
        return max(1, self.backends[backend].block_size) if backend is not None else 1

    def _log(self, action: str, program_id: ProgramId, backend: BackendId | None, reason: str = "") -> None:
        self.records.decision(self.clock(), action, program_id, backend, reason)
