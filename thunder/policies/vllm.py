"""Request-level baseline: vLLM behind its router, with no program awareness.

Source: vLLM's data-parallel router as the ThunderAgent paper describes it
(section 3.2): the KV-aware router keeps sending a workflow's requests to the
node that served it before. This policy never holds a request and never
pauses, restores or pins anything; the engine's own LRU eviction and
recompute preemption decide what stays in memory.

Routing rules (``VllmConfig.routing``):

* ``sticky`` (default): a program goes back to the backend it used before
  (session affinity / KV-aware routing); a new program, or one whose backend
  is unhealthy, goes to the least-loaded backend.
* ``least-loaded``: every request goes to the healthy backend with the fewest
  running tokens, then the fewest waiting requests.
* ``round-robin``: healthy backends in id order, one request each.

Ties go to the lowest backend id. Departure: with no healthy backend at all
there is nowhere to send a request, so ``route`` answers ``Hold`` (the only
case it does).
"""

from __future__ import annotations

from dataclasses import dataclass

from thunder.core.options import option, require_choice
from thunder.core.program import BackendId, Program
from thunder.core.view import ClusterView, Decision, Dispatch, Hold, Route, Trigger
from thunder.policies.routing import least_loaded, sticky

ROUTING_RULES = ("sticky", "least-loaded", "round-robin")


@dataclass(frozen=True, slots=True)
class VllmConfig:
    routing: str = option("sticky", "how requests pick a backend: " + " | ".join(ROUTING_RULES))

    def __post_init__(self) -> None:
        require_choice("routing", self.routing, ROUTING_RULES)


class RequestLevelPolicy:
    """vLLM with its router: dispatch every request at once, decide nothing else."""

    name = "vllm"
    interval_s = None  # event-driven only: no periodic control step
    checks_before_dispatch = False

    def __init__(self, config: VllmConfig = VllmConfig()) -> None:
        self.config = config
        self._turns = 0  # round-robin cursor: how many requests it has placed

    def route(self, view: ClusterView, program: Program) -> Route:
        backend = self._pick(view, program)
        if backend is None:
            return Hold("no healthy backend")
        return Dispatch(backend)

    def decide(self, view: ClusterView, trigger: Trigger) -> tuple[Decision, ...]:
        return ()

    def _pick(self, view: ClusterView, program: Program) -> BackendId | None:
        if self.config.routing == "sticky":
            return sticky(view.backends, program)
        if self.config.routing == "least-loaded":
            return least_loaded(view.backends)
        return self._next_in_turn(view)

    def _next_in_turn(self, view: ClusterView) -> BackendId | None:
        healthy = sorted(b.backend_id for b in view.backends if b.healthy)
        if not healthy:
            return None
        chosen = healthy[self._turns % len(healthy)]
        self._turns += 1
        return chosen
