"""Space-time-product (STP) cost ledger, paper section 4.2, Eq. 2-3.

Cost is the integral of KV-cache tokens over time (token-seconds). At every
instant a backend's whole capacity is in exactly one of five states, so the
five terms add up to ``capacity_tokens x elapsed_s``:

* ``decode``     held by requests generating tokens (useful work)
* ``prefill``    held by requests prefilling tokens never computed before (useful)
* ``recompute``  held by requests re-prefilling tokens computed before and
                 evicted (KV-cache thrashing), or preempted and redone
* ``caching``    held by cached blocks with no running request (a program's
                 KV kept while its tool runs, or pinned)
* ``unused``     empty blocks: memory nobody uses (imbalance, under-admission)

The ledger is fed by whichever world runs; it does no I/O and reads no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

COST_TERMS = ("decode", "prefill", "recompute", "caching", "unused")


@dataclass(slots=True)
class CostLedger:
    """Accumulates token-seconds per cost term."""

    token_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(COST_TERMS, 0.0))

    def add(self, term: str, token_seconds: float) -> None:
        if token_seconds < 0:
            raise ValueError(f"negative cost for {term}: {token_seconds}")
        self.token_seconds[term] += token_seconds

    def add_interval(self, duration_s: float, *, decode: float = 0.0, prefill: float = 0.0,
                     recompute: float = 0.0, caching: float = 0.0, unused: float = 0.0) -> None:
        """Charge ``duration_s`` of a constant state given in tokens per term."""
        if duration_s <= 0:
            return
        # Unrolled (the simulator charges every engine step): the terms in COST_TERMS order.
        if decode:
            self.add("decode", decode * duration_s)
        if prefill:
            self.add("prefill", prefill * duration_s)
        if recompute:
            self.add("recompute", recompute * duration_s)
        if caching:
            self.add("caching", caching * duration_s)
        if unused:
            self.add("unused", unused * duration_s)

    def merge(self, other: "CostLedger") -> None:
        for term in COST_TERMS:
            self.token_seconds[term] += other.token_seconds[term]

    @property
    def total(self) -> float:
        return sum(self.token_seconds.values())

    def shares(self) -> dict[str, float]:
        """Each term's share of the total (all zero for an empty ledger)."""
        total = self.total
        if total <= 0:
            return dict.fromkeys(COST_TERMS, 0.0)
        return {term: value / total for term, value in self.token_seconds.items()}
