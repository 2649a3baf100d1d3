"""Which programs to pause to free a number of tokens: the paper's Eq. 9, solved better.

Eq. 9 asks for the set S of programs whose freed tokens cover the need at the
least sum of c^2 (the recompute cost of each). The paper's answer,
shortest-first, is not optimal: to free 10 tokens from {9, 9, 10} it pauses
{9, 9} (162) rather than {10} (100). ``choose_pauses`` takes the cheaper of the
single cheapest program that frees enough and a greedy by cost per token freed,
pruned of picks it did not need. Costs are the caller's (c^2, possibly
weighted), so the rule stays one pure function.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from thunder.core.program import Program

PAUSE_RULES = ("min-cost", "shortest-first")
# A pause that frees less than this many tokens of counted demand frees nothing worth an eviction.
NEGLIGIBLE_TOKENS = 1.0


@dataclass(slots=True)
class Candidate:
    program: Program
    freed: float  # counted tokens a pause frees
    cost: float  # Eq. 9 term, weighted


def choose_pauses(candidates: list[Candidate], need: float, rule: str = "min-cost") -> list[Candidate]:
    """The candidates to pause to free ``need`` tokens (all of them if they cannot).
    Candidates that free almost nothing are never chosen."""
    candidates = [c for c in candidates if c.freed >= NEGLIGIBLE_TOKENS]
    if rule == "shortest-first":
        ordered = sorted(candidates, key=lambda c: (c.program.context_tokens, c.program.program_id))
        return _take_until(ordered, need)
    if sum(c.freed for c in candidates) < need:
        return candidates  # all of them, and the caller covers the rest
    greedy = _take_until(sorted(candidates, key=lambda c: (c.cost / c.freed, c.program.program_id)), need)
    for spare in sorted(greedy, key=lambda c: -c.cost):
        if sum(c.freed for c in greedy) - spare.freed >= need:
            greedy.remove(spare)
    single = min((c for c in candidates if c.freed >= need), default=None,
                 key=lambda c: (c.cost, c.program.program_id))
    if single is not None and single.cost <= sum(c.cost for c in greedy):
        return [single]
    return greedy


def _take_until(ordered: Iterable[Candidate], need: float) -> list[Candidate]:
    picked: list[Candidate] = []
    freed = 0.0
    for candidate in ordered:
        if freed >= need:
            break
        picked.append(candidate)
        freed += candidate.freed
    return picked
