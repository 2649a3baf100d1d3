"""ThunderAgent's index: per-backend demand and the queue, kept between calls.

``ProgramAwarePolicy.decide`` runs on every event; walking every program each
time made it the simulator's bottleneck. The index holds what a control step
needs, updated only for the programs that changed:

* per healthy backend (a ``Slot``), its ACTIVE members and two
  ``RunningDemand``s: the thrashing check's (unmarked members, check decay)
  and the restore gate's (every member, decay always on), both with one
  decay origin T0, the time of the last rebuild;
* the global queue (every PAUSED program), sorted three ways: by time queued
  (whose prefix is the aged programs, kept in restore order as they age), and
  by the fewest tokens a restore would add (weight-1 programs by private
  tokens, decaying ones by a key scaled like ``RunningDemand``), so a step
  can skip programs that fit nowhere without looking at them;
* small caches that let a step skip a backend whose answer cannot have
  changed: a passed thrashing check (demand only decays until the ledger
  changes), and a restore gate closed until a time computable from the decay.

Trust: the index is right if every program that changed since the last call
is refreshed. The policy refreshes the trigger's program, those its last
decisions named and those it routed; it checks every program by identity on
each tick, and rebuilds when the backends or the program count disagree, or
before x^(now - T0) passes 2^HORIZON_BITS.
"""

from __future__ import annotations

import math
from bisect import bisect_right, insort
from operator import itemgetter
from typing import Callable, Iterable, Iterator

from thunder.core.program import BackendId, Phase, Program, ProgramId, Status
from thunder.core.view import BackendView
from thunder.policies.thunder.demand import split_tokens
from thunder.policies.thunder.running_demand import RunningDemand
from thunder.policies.thunder.running_demand import HORIZON_BITS

_first = itemgetter(0)


def queued_since_s(program: Program) -> float:
    return program.arrived_s if program.paused_since_s is None else program.paused_since_s


class Slot:
    """One healthy backend in the index."""

    __slots__ = ("backend", "members", "pause", "restore", "closed_version", "closed_from_s", "closed_until_s")

    def __init__(self, backend: BackendView) -> None:
        self.backend = backend
        self.members: dict[ProgramId, Program] = {}  # ACTIVE here, marked ones included
        self.pause = RunningDemand()  # unmarked members, check decay
        self.restore = RunningDemand()  # every member, decay always on
        # Certainly closed for restores between these times while ``restore`` stays at this version.
        self.closed_version = -1
        self.closed_from_s = math.inf
        self.closed_until_s = -math.inf


class ThunderIndex:
    """Everything ``decide`` needs, for one set of backends and one origin T0."""

    def __init__(self, backends: tuple[BackendView, ...], origin_s: float, check_base: float,
                 restore_base: float, shared_prefix_once: bool,
                 priority: Callable[[Program], tuple]) -> None:
        self.signature = backend_signature(backends)
        self.duplicate_backends = len({b.backend_id for b in backends}) != len(backends)
        self.slots = {b.backend_id: Slot(b) for b in backends if b.healthy}
        self.origin_s = origin_s
        self.check_base = check_base
        self.restore_base = restore_base
        self.shared_prefix_once = shared_prefix_once
        self.programs: dict[ProgramId, Program] = {}
        self.stranded = 0  # unmarked ACTIVE programs on an unhealthy or unknown backend
        # Slots whose thrashing check has not passed since their pause ledger last
        # changed, and the latest time one passed (demand only decays after it).
        self.unchecked: set[Slot] = set(self.slots.values())
        self.cleared_s = -math.inf
        self.latest_since_s = -math.inf  # latest phase start of a decaying program
        self.queue: dict[ProgramId, Program] = {}
        self.queue_tokens: dict[ProgramId, tuple[int, float | None]] = {}  # private tokens, x^(t - T0)
        self.by_since: list[tuple[float, ProgramId]] = []
        self.by_tokens: list[tuple[int, ProgramId]] = []  # weight-1 queued programs, private tokens
        self.by_scaled: list[tuple[float, ProgramId]] = []  # decaying queued programs, scaled tokens
        self.priority = priority  # restore order among aged programs, ending with the program id
        self._aged: list[tuple] = []  # priority keys of the programs queued at or before _aged_until_s
        self._aged_until_s = -math.inf
        bits = math.log2(max(check_base, restore_base))  # rebuild before x^(now - T0) passes 2^HORIZON_BITS
        self.horizon_s = HORIZON_BITS / bits if bits > 0 else math.inf

    def fits(self, backends: tuple[BackendView, ...], now_s: float) -> bool:
        """Whether this index can serve a view with these backends at ``now_s``."""
        if not self.origin_s <= now_s <= self.origin_s + self.horizon_s or len(backends) != len(self.signature):
            return False
        for backend, (backend_id, capacity_tokens, healthy) in zip(backends, self.signature):
            if (backend.backend_id != backend_id or backend.capacity_tokens != capacity_tokens
                    or backend.healthy != healthy):
                return False
        return True

    def scale(self, base: float, now_s: float) -> float:
        return float(base ** -(now_s - self.origin_s)) if base != 1.0 else 1.0

    def refresh(self, program_id: ProgramId, program: Program | None) -> None:
        """Make the index agree with ``program`` (None: it is gone)."""
        old = self.programs.get(program_id)
        if old is program:
            return
        if old is not None:
            del self.programs[program_id]
            if old.status is Status.ACTIVE:
                self._count_active(old, -1)
            elif old.status is Status.PAUSED:
                self._count_queued(old, -1)
        if program is not None:
            self.programs[program_id] = program
            if program.status is Status.ACTIVE:
                self._count_active(program, 1)
            elif program.status is Status.PAUSED:
                self._count_queued(program, 1)

    def _count_active(self, program: Program, sign: int) -> None:
        slot = self.slots.get(program.backend)  # type: ignore[arg-type]  # None is just not found
        marked = program.marked_for_pause
        if slot is None:
            if not marked:
                self.stranded += sign
            return
        if sign > 0:
            slot.members[program.program_id] = program
        else:
            del slot.members[program.program_id]
        prefix, private_tokens = split_tokens(program, self.shared_prefix_once)
        prefix_tokens = program.shared_prefix_tokens
        factor = self._factor(program, self.restore_base)
        slot.restore.change(prefix, private_tokens, prefix_tokens, factor, sign)
        if not marked:
            if self.check_base != self.restore_base:
                factor = self._factor(program, self.check_base)
            slot.pause.change(prefix, private_tokens, prefix_tokens, factor, sign)
            self.unchecked.add(slot)

    def _count_queued(self, program: Program, sign: int) -> None:
        pid = program.program_id
        since = (queued_since_s(program), pid)
        _, private_tokens = split_tokens(program, self.shared_prefix_once)
        factor = self._factor(program, self.restore_base)
        tokens: tuple = (private_tokens, pid) if factor is None else (factor * private_tokens, pid)
        by_tokens = self.by_tokens if factor is None else self.by_scaled
        if sign > 0:
            self.queue[pid] = program
            self.queue_tokens[pid] = (private_tokens, factor)
            insort(self.by_since, since)
            insort(by_tokens, tokens)
        else:
            del self.queue[pid], self.queue_tokens[pid]
            _discard(self.by_since, since)
            _discard(by_tokens, tokens)
        if since[0] <= self._aged_until_s:
            if sign > 0:
                insort(self._aged, self.priority(program))
            else:
                _discard(self._aged, self.priority(program))

    def _factor(self, program: Program, base: float) -> float | None:
        """x^(t - T0) for a decaying program, None if it weighs 1."""
        if program.phase is not Phase.ACTING or base == 1.0:
            return None
        since_s = program.phase_since_s
        if since_s > self.latest_since_s:
            self.latest_since_s = since_s
        exponent = since_s - self.origin_s
        if exponent > self.horizon_s:
            return 0.0  # a phase starting in the future: ``decide`` will not trust the index
        return float(base ** exponent)

    def aged(self, aged_before_s: float) -> Iterator[Program]:
        """Queued programs whose queue time is at or before ``aged_before_s``, in priority order."""
        queue = self.queue
        return (queue[key[-1]] for key in self._aged_keys(aged_before_s))

    def aged_tokens(self, aged_before_s: float) -> Iterator[tuple[int, float | None]]:
        """(private tokens, x^(t - T0) or None) of the same programs, in the same order."""
        tokens = self.queue_tokens
        return (tokens[key[-1]] for key in self._aged_keys(aged_before_s))

    def _aged_keys(self, aged_before_s: float) -> list[tuple]:
        by_since = self.by_since
        if aged_before_s < self._aged_until_s:  # time went back: start over
            self._aged, self._aged_until_s = [], -math.inf
        start = bisect_right(by_since, self._aged_until_s, key=_first)
        end = bisect_right(by_since, aged_before_s, key=_first)
        for _, pid in by_since[start:end]:
            insort(self._aged, self.priority(self.queue[pid]))
        self._aged_until_s = aged_before_s
        return self._aged

    def smallest_tokens(self, scale: float) -> float:
        """A lower bound on the fewest tokens any queued program would add."""
        smallest = self.by_tokens[0][0] if self.by_tokens else math.inf
        if self.by_scaled:
            smallest = min(smallest, self.by_scaled[0][0] * scale * (1 - 1e-9))
        return smallest

    def within(self, limit_tokens: float, scale: float) -> list[Program]:
        """Queued programs that might add at most ``limit_tokens`` (a superset)."""
        end = bisect_right(self.by_tokens, limit_tokens, key=_first)
        found = [self.queue[pid] for _, pid in self.by_tokens[:end]]
        if self.by_scaled:
            end = bisect_right(self.by_scaled, (limit_tokens + abs(limit_tokens) * 1e-9) / scale + 1e-6, key=_first)
            found.extend(self.queue[pid] for _, pid in self.by_scaled[:end])
        return found


def _discard(items: list, item: tuple) -> None:
    at = bisect_right(items, item) - 1
    assert items[at] == item, "index out of step with its programs"
    del items[at]


def backend_signature(backends: Iterable[BackendView]) -> tuple[tuple[BackendId, int, bool], ...]:
    return tuple((b.backend_id, b.capacity_tokens, b.healthy) for b in backends)
