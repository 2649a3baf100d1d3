"""Cache-aware gateway routing: vLLM engines behind the SGLang model gateway.

Source: the SGLang gateway (``sgl-router``, later ``sgl-model-gateway``) and
vLLM's router, which is a fork of it; the ThunderAgent paper's rollout
baseline ("vLLM + Gateway", section 5.1 and Table 2). Its ``cache_aware``
policy keeps an approximate radix tree per worker of the request texts it
sent there, and routes each request:

1. Load check. A worker's load is its requests in flight (here: running +
   waiting requests of the engine). The healthy workers are *imbalanced* when
   ``max - min > balance_abs_threshold`` and ``max > balance_rel_threshold *
   min``; then the request goes to the least-loaded worker.
2. Otherwise prefix match: the worker whose tree holds the longest prefix of
   the request. If that prefix is more than ``cache_threshold`` of the
   request, go there; else go to the worker with the smallest tree (the one
   that has been sent the least text).
3. Either way the request is inserted into the chosen worker's tree.

Defaults are those of the gateway's command line (``RouterArgs`` of the
``sglang_router`` Python package): cache threshold 0.3, balance thresholds
64 (absolute) and 1.5 (relative), tree limit 2**26 characters. The Rust
library's own ``CacheAwareConfig::default`` used 0.5 / 32 / 1.1 in earlier
versions; a user launching the gateway gets the command-line values.

Our approximate tree (the policy sees token counts and prefix ids, not text):
* per backend, the shared-prefix ids it was sent, and per program the longest
  prompt it was sent there. Agent prompts only grow (trace format rule 4), so
  a program's earlier prompt is a prefix of its next one and matches in full
  where it was sent; a prompt shorter than the one recorded means the context
  was reset, and then only the shared prefix matches;
* tree size = tokens recorded; past ``max_tree_tokens`` whole program records
  are dropped least recently sent first (the gateway evicts LRU leaves on a
  timer; we evict at once);
* ties (two backends match equally, or hold equal trees) go to the lowest id,
  standing in for the real tree's "first tenant in the node's map", which is
  arbitrary but fixed for a given pair of worker URLs.

The gateway never learns that a program ended, so finished programs stay in
its tree until evicted, as in the real one. It never holds, pauses, restores
or pins. ``PowerOfTwoPolicy`` is the gateway's ``power_of_two`` policy: two
distinct healthy workers drawn at random (seeded), the less loaded wins.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

from thunder.core.options import option, require
from thunder.core.program import BackendId, Program, ProgramId
from thunder.core.view import BackendView, ClusterView, Decision, Dispatch, Hold, Route, Trigger

CHARS_PER_TOKEN = 4  # to state the gateway's character limit in tokens


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    cache_threshold: float = option(0.3, "go to the best-matching backend only if the match is more than "
                                         "this share of the request (sglang_router default 0.3)")
    balance_abs_threshold: int = option(64, "imbalanced if max - min requests in flight exceeds this "
                                            "(sglang_router default 64)")
    balance_rel_threshold: float = option(1.5, "... and max > this * min (sglang_router default 1.5)")
    max_tree_tokens: int = option(2**26 // CHARS_PER_TOKEN, "tokens one backend's prefix record may hold "
                                  "before LRU eviction (2**26 characters at 4 characters per token)")

    def __post_init__(self) -> None:
        require(0 <= self.cache_threshold <= 1, "cache_threshold must be in [0, 1]")
        require(self.balance_abs_threshold >= 0, "balance_abs_threshold must be >= 0")
        require(self.balance_rel_threshold >= 1, "balance_rel_threshold must be >= 1")
        require(self.max_tree_tokens >= 1, "max_tree_tokens must be >= 1")


def load(backend: BackendView) -> int:
    """Requests in flight on a backend: what the gateway counts per worker."""
    return backend.running_requests + backend.waiting_requests


def least_loaded_by_requests(backends: Sequence[BackendView]) -> BackendId:
    return min(backends, key=lambda b: (load(b), b.backend_id)).backend_id


def is_imbalanced(backends: Sequence[BackendView], abs_threshold: int, rel_threshold: float) -> bool:
    loads = [load(b) for b in backends]
    high, low = max(loads), min(loads)
    return high - low > abs_threshold and high > low * rel_threshold


class PrefixRecord:
    """What the gateway has sent to one backend (its approximate tree)."""

    def __init__(self) -> None:
        self.shared_ids: set[str] = set()
        self.prompts: OrderedDict[ProgramId, int] = OrderedDict()  # least recently sent first
        self._added: dict[ProgramId, int] = {}  # tokens each program's inserts added to the tree
        self.tokens = 0

    def match_tokens(self, program: Program) -> int:
        """Longest prefix of ``program``'s request held here (tokens)."""
        request = program.context_tokens
        own = self.prompts.get(program.program_id, 0)
        if own > request:
            own = 0  # the context was reset: the old history is no prefix of it
        shared = program.shared_prefix_tokens if program.shared_prefix_id in self.shared_ids else 0
        return min(max(own, shared), request)

    def insert(self, program: Program, max_tokens: int) -> None:
        pid = program.program_id
        added = max(0, program.context_tokens - self.match_tokens(program))
        if program.shared_prefix_id is not None and program.shared_prefix_tokens > 0:
            self.shared_ids.add(program.shared_prefix_id)
        # The latest prompt: after a reset the next prompt extends the new, shorter one.
        self.prompts[pid] = program.context_tokens
        self.prompts.move_to_end(pid)
        self._added[pid] = self._added.get(pid, 0) + added
        self.tokens += added
        while self.tokens > max_tokens and len(self.prompts) > 1:
            old, _ = self.prompts.popitem(last=False)
            self.tokens -= self._added.pop(old, 0)


class CacheAwareGatewayPolicy:
    """The SGLang gateway's cache-aware routing in front of request-level engines."""

    name = "gateway"
    interval_s = None  # event-driven only: no periodic control step
    checks_before_dispatch = False

    def __init__(self, config: GatewayConfig = GatewayConfig()) -> None:
        self.config = config
        self.records: dict[BackendId, PrefixRecord] = {}
        self.balanced_routes = 0  # requests sent by the load check (for tests and reports)

    def route(self, view: ClusterView, program: Program) -> Route:
        healthy = view.healthy_backends()
        if not healthy:
            return Hold("no healthy backend")
        chosen = self._pick(healthy, program)
        self._record(chosen).insert(program, self.config.max_tree_tokens)
        return Dispatch(chosen)

    def decide(self, view: ClusterView, trigger: Trigger) -> tuple[Decision, ...]:
        return ()

    def match_rate(self, backend: BackendId, program: Program) -> float:
        return self._record(backend).match_tokens(program) / max(1, program.context_tokens)

    def _pick(self, healthy: list[BackendView], program: Program) -> BackendId:
        config = self.config
        if is_imbalanced(healthy, config.balance_abs_threshold, config.balance_rel_threshold):
            self.balanced_routes += 1
            return least_loaded_by_requests(healthy)
        ids = [b.backend_id for b in healthy]
        best = max(ids, key=lambda b: (self._record(b).match_tokens(program), -b))
        if self.match_rate(best, program) > config.cache_threshold:
            return best
        return min(ids, key=lambda b: (self._record(b).tokens, b))

    def _record(self, backend: BackendId) -> PrefixRecord:
        return self.records.setdefault(backend, PrefixRecord())


@dataclass(frozen=True, slots=True)
class PowerOfTwoConfig:
    seed: int = option(0, "seed of the random pair draws (same seed, same routes)")


class PowerOfTwoPolicy:
    """The gateway's power-of-two choices: the less loaded of two random healthy backends."""

    name = "power-of-two"
    interval_s = None  # event-driven only: no periodic control step
    checks_before_dispatch = False

    def __init__(self, config: PowerOfTwoConfig = PowerOfTwoConfig()) -> None:
        self.config = config
        self._rng = random.Random(config.seed)

    def route(self, view: ClusterView, program: Program) -> Route:
        healthy = sorted(view.healthy_backends(), key=lambda b: b.backend_id)
        if not healthy:
            return Hold("no healthy backend")
        pair = self._rng.sample(healthy, 2) if len(healthy) >= 2 else healthy
        return Dispatch(least_loaded_by_requests(pair))

    def decide(self, view: ClusterView, trigger: Trigger) -> tuple[Decision, ...]:
        return ()
