"""Autellix: program-level least attained service (PLAS) with data-locality routing.

Source: Luo et al., "Autellix: An Efficient Serving Engine for LLM Agents as
General Programs" (arXiv 2502.13965). Two of its mechanisms are kept:

* PLAS ordering. Each request is dispatched with ``priority`` = the service
  its program has attained so far, so the engine's waiting queue runs the
  calls of programs that have received the least service first (the engine
  also preempts the highest value first). Autellix measures service in
  seconds of engine time; engine time depends on batch-mates, so we count
  tokens instead: each completed call adds its prompt plus output tokens
  (every prompt token is prefilled or attended over, every output token
  decoded), read from the program's context at REQUEST_DONE.
* Data-locality load balancing. A program's calls return to the engine that
  served it last, where its KV cache is; calls short enough that losing the
  cache costs little (fewer than ``locality_min_tokens`` prompt tokens,
  2,048 by default, our reading of the paper's cut-off) and new programs go
  to the engine with the fewest requests in flight (running + waiting).
  ``overload_requests`` > 0 adds an escape we chose, not Autellix's: leave a
  program's engine when it has that many more requests in flight than the
  least-loaded one.

Left out: Autellix's discretised priority queues and its anti-starvation
promotion (a call waiting long relative to its service jumps ahead), and
ATLAS for multi-threaded programs (our programs are single-threaded).
Ties go to the lowest backend id. Autellix never holds, pauses or restores.
"""

from __future__ import annotations

from dataclasses import dataclass

from thunder.core.options import option, require
from thunder.core.program import BackendId, Program, ProgramId
from thunder.core.view import ClusterView, Decision, Dispatch, Hold, Route, Trigger, TriggerKind
from thunder.policies.gateway import least_loaded_by_requests, load


@dataclass(frozen=True, slots=True)
class AutellixConfig:
    locality_min_tokens: int = option(2048, "requests with at least this many prompt tokens go back to "
                                            "their program's engine; shorter ones are load-balanced")
    overload_requests: int = option(0, "leave the program's engine when it has this many more requests in "
                                       "flight than the least-loaded one (0: never, as Autellix)")

    def __post_init__(self) -> None:
        require(self.locality_min_tokens >= 0, "locality_min_tokens must be >= 0")
        require(self.overload_requests >= 0, "overload_requests must be >= 0")


class LeastAttainedServicePolicy:
    """PLAS priorities and locality-first routing."""

    name = "autellix"
    interval_s = None  # event-driven only: no periodic control step
    checks_before_dispatch = False

    def __init__(self, config: AutellixConfig = AutellixConfig()) -> None:
        self.config = config
        self.attained_tokens: dict[ProgramId, int] = {}

    def route(self, view: ClusterView, program: Program) -> Route:
        backend = self._pick(view, program)
        if backend is None:
            return Hold("no healthy backend")
        return Dispatch(backend, priority=float(self.attained_tokens.get(program.program_id, 0)))

    def decide(self, view: ClusterView, trigger: Trigger) -> tuple[Decision, ...]:
        pid = trigger.program_id
        if pid is None:
            return ()
        if trigger.kind is TriggerKind.REQUEST_DONE:
            program = view.programs.get(pid)
            if program is not None:
                # context after the call = its prompt + its output
                self.attained_tokens[pid] = self.attained_tokens.get(pid, 0) + program.context_tokens
        elif trigger.kind is TriggerKind.RELEASE:
            self.attained_tokens.pop(pid, None)
        return ()

    def _pick(self, view: ClusterView, program: Program) -> BackendId | None:
        healthy = view.healthy_backends()
        if not healthy:
            return None
        lightest = least_loaded_by_requests(healthy)
        home = next((b for b in healthy if b.backend_id == program.backend), None)
        if home is None or program.context_tokens < self.config.locality_min_tokens:
            return lightest
        slack = self.config.overload_requests
        if slack and load(home) - min(load(b) for b in healthy) > slack:
            return lightest
        return home.backend_id
