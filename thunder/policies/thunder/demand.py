"""Per-backend KV demand as ThunderAgent's thrashing check counts it (Eq. 6-7).

A ``BackendDemand`` is a small ledger a policy builds fresh for each control
step: it adds and removes programs in O(1) so pause and restore decisions can
be tried out and counted immediately.

Units: tokens (floats, because acting programs are weighted by the decay
f(t) = x^-t). With ``shared_prefix_once`` a program adds its context minus its
shared prefix, times its weight, and each distinct ``shared_prefix_id`` adds
its ``shared_prefix_tokens`` once, at full weight, while any program holding
it is counted (the engine keeps one copy of those blocks, and reasoning
holders keep it hot). Without it every program adds its whole context, times
its weight.

A ledger fed programs one by one is exact: the same float as any ledger fed
the same programs in the same order (``error_tokens`` 0). One started with
``BackendDemand.approximate`` from sums kept elsewhere (``RunningDemand``)
carries a bound on its distance from that float, and every later addition
or removal widens it (``policies.certify``).
"""

from __future__ import annotations

from thunder.core.program import Phase, Program
from thunder.policies.thunder.certify import ROUNDING


def decay_weight(program: Program, now_s: float, decay_base: float) -> float:
    """f(t) = decay_base^-t for an acting program (t = seconds acting), 1 otherwise."""
    if program.phase is not Phase.ACTING or decay_base == 1.0:
        return 1.0
    # program.acting_for_s(now_s), inlined: this runs for every program on every event
    return float(decay_base ** -max(0.0, now_s - program.phase_since_s))


class BackendDemand:
    """Counted demand of one backend; ``total_tokens`` is the left side of Eq. 7."""

    __slots__ = ("capacity_tokens", "shared_prefix_once", "program_count", "error_tokens", "_private_tokens",
                 "_prefix_holders", "_prefix_tokens", "_shared_tokens")

    def __init__(self, capacity_tokens: int, shared_prefix_once: bool) -> None:
        self.capacity_tokens = capacity_tokens
        self.shared_prefix_once = shared_prefix_once
        self.program_count = 0
        self.error_tokens = 0.0  # bound on |_private_tokens - the exact ledger's|; 0: it is exact
        self._private_tokens = 0.0
        self._prefix_holders: dict[str, int] = {}
        self._prefix_tokens: dict[str, int] = {}
        self._shared_tokens = 0

    @classmethod
    def approximate(cls, capacity_tokens: int, shared_prefix_once: bool, program_count: int,
                    private_tokens: float, error_tokens: float, prefix_holders: dict[str, int],
                    prefix_tokens: dict[str, int]) -> BackendDemand:
        """A ledger whose private sum is known within ``error_tokens`` (0: exactly).
        The prefix dicts are taken over, not copied."""
        demand = cls(capacity_tokens, shared_prefix_once)
        demand.program_count = program_count
        demand._private_tokens = private_tokens
        demand.error_tokens = error_tokens
        demand._prefix_holders = prefix_holders
        demand._prefix_tokens = prefix_tokens
        demand._shared_tokens = sum(prefix_tokens.values())
        return demand

    @property
    def total_tokens(self) -> float:
        return self._private_tokens + self._shared_tokens

    def total_error(self) -> float:
        """Bound on how far ``total_tokens`` may be from the exact ledger's (0: it is exact)."""
        error = self.error_tokens
        return error + ROUNDING * (abs(self._private_tokens) + self._shared_tokens) if error else 0.0

    def added_by(self, program: Program, weight: float) -> float:
        """Tokens that counting ``program`` here (with ``weight``) would add."""
        prefix, private_tokens = self._split(program)
        added = weight * private_tokens
        if prefix is not None and prefix not in self._prefix_holders:
            added += program.shared_prefix_tokens
        return added

    def add(self, program: Program, weight: float) -> None:
        prefix, private_tokens = self._split(program)
        self.program_count += 1
        self._private_tokens += weight * private_tokens
        if self.error_tokens:  # this rounding, and the weight's (the exact ledger may never see this program)
            self.error_tokens += ROUNDING * (abs(self._private_tokens) + private_tokens)
        if prefix is None:
            return
        holders = self._prefix_holders.get(prefix, 0)
        if holders == 0:
            self._prefix_tokens[prefix] = program.shared_prefix_tokens
            self._shared_tokens += program.shared_prefix_tokens
        self._prefix_holders[prefix] = holders + 1

    def remove(self, program: Program, weight: float) -> None:
        """Stop counting ``program``, which was added with ``weight``."""
        prefix, private_tokens = self._split(program)
        self.program_count -= 1
        self._private_tokens -= weight * private_tokens
        if self.error_tokens:  # this rounding, and the weight's (the exact ledger may never see this program)
            self.error_tokens += ROUNDING * (abs(self._private_tokens) + private_tokens)
        if prefix is None:
            return
        holders = self._prefix_holders.pop(prefix) - 1
        if holders:
            self._prefix_holders[prefix] = holders
        else:
            self._shared_tokens -= self._prefix_tokens.pop(prefix)

    def _split(self, program: Program) -> tuple[str | None, int]:
        return split_tokens(program, self.shared_prefix_once)


def split_tokens(program: Program, shared_prefix_once: bool) -> tuple[str | None, int]:
    """(shared prefix id counted once per backend, or None; tokens counted per program)."""
    prefix = program.shared_prefix_id
    if prefix is None or not shared_prefix_once or program.shared_prefix_tokens <= 0:
        return None, program.context_tokens
    return prefix, max(0, program.context_tokens - program.shared_prefix_tokens)
