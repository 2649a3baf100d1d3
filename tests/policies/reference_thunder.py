"""The ThunderAgent policy as it was before its incremental index: the oracle.

A verbatim copy of ``thunder/policies/thunder/paper.py`` (decide, route and their
helpers from ``demand.py`` and ``placement.py``) taken before
``ProgramAwarePolicy`` learnt to keep an index between calls. It walks every
program on every call, which is slow but obviously right; the equivalence
tests drive it and the package policy through the same calls and require the
same decisions. Do not "fix" or speed up this file: it is the specification.
"""

from __future__ import annotations

from typing import Iterable

from thunder.core.program import BackendId, Phase, Program, ProgramId, Status
from thunder.core.view import ClusterView, Decision, Dispatch, Hold, Pause, Restore, Route, Trigger, TriggerKind
from thunder.policies.thunder.paper import ThunderConfig

# ---- policies/thunder/demand.py ----------------------------------------------------------------


def decay_weight(program: Program, now_s: float, decay_base: float) -> float:
    """f(t) = decay_base^-t for an acting program (t = seconds acting), 1 otherwise."""
    if program.phase is not Phase.ACTING or decay_base == 1.0:
        return 1.0
    # program.acting_for_s(now_s), inlined: this runs for every program on every event
    return float(decay_base ** -max(0.0, now_s - program.phase_since_s))


class BackendDemand:
    """Counted demand of one backend; ``total_tokens`` is the left side of Eq. 7."""

    __slots__ = ("capacity_tokens", "shared_prefix_once", "program_count", "_private_tokens",
                 "_prefix_holders", "_prefix_tokens", "_shared_tokens")

    def __init__(self, capacity_tokens: int, shared_prefix_once: bool) -> None:
        self.capacity_tokens = capacity_tokens
        self.shared_prefix_once = shared_prefix_once
        self.program_count = 0
        self._private_tokens = 0.0
        self._prefix_holders: dict[str, int] = {}
        self._prefix_tokens: dict[str, int] = {}
        self._shared_tokens = 0

    @property
    def total_tokens(self) -> float:
        return self._private_tokens + self._shared_tokens

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


# ---- policies/thunder/placement.py -------------------------------------------------------------


# Demand sums weighted floats; ignore sub-token rounding so that removing and
# re-adding a program never turns "exactly at the limit" into "over it".
SLACK_TOKENS = 1e-6


class BackendStep:
    """One healthy backend during one control step."""

    __slots__ = ("backend_id", "limit_tokens", "members", "pause_demand", "restore_demand")

    def __init__(self, backend_id: BackendId, capacity_tokens: int, lambda_max: float,
                 shared_prefix_once: bool) -> None:
        self.backend_id = backend_id
        self.limit_tokens = lambda_max * capacity_tokens
        self.members: list[Program] = []  # ACTIVE programs bound here, marked ones included
        self.pause_demand = BackendDemand(capacity_tokens, shared_prefix_once)
        self.restore_demand = BackendDemand(capacity_tokens, shared_prefix_once)  # filled lazily

    def room_tokens(self) -> float:
        return self.limit_tokens - self.restore_demand.total_tokens

    def over_limit(self, demand: BackendDemand) -> bool:
        return demand.total_tokens > self.limit_tokens + SLACK_TOKENS


class RestoreTargets:
    """The backends open for restores in this step, and the placement rule."""

    def __init__(self, open_steps: list[BackendStep], placement: str, shared_prefix_once: bool) -> None:
        self._steps = sorted(open_steps, key=lambda s: s.backend_id)
        self._best_fit = placement == "best-fit"
        self._shared_prefix_once = shared_prefix_once
        self._max_room = self._roomiest_room()

    def __bool__(self) -> bool:
        return bool(self._steps)

    def place(self, program: Program, weight: float) -> BackendStep | None:
        """The chosen backend, already charged with ``program``; None if none."""
        target = self._fitting(program, weight)
        if target is None:
            target = self._empty()
        if target is not None:
            was_roomiest = target.room_tokens() >= self._max_room
            target.restore_demand.add(program, weight)
            if was_roomiest:  # only the target's room shrank
                self._max_room = self._roomiest_room()
        return target

    def reserve_roomiest(self) -> None:
        """Take the backend with the most room out of this step (it drains for an aged program)."""
        roomiest = max(self._steps, key=lambda s: (s.room_tokens(), -s.backend_id))
        self._steps.remove(roomiest)
        self._max_room = self._roomiest_room()

    def _fitting(self, program: Program, weight: float) -> BackendStep | None:
        _, private_tokens = split_tokens(program, self._shared_prefix_once)
        if weight * private_tokens > self._max_room + SLACK_TOKENS:
            return None  # cheap reject: too big even where its prefix is already held
        best: BackendStep | None = None
        best_key = 0.0
        for step in self._steps:  # in id order, so strict < keeps the lowest id on ties
            room = step.room_tokens()
            room_after = room - step.restore_demand.added_by(program, weight)
            if room_after < -SLACK_TOKENS:
                continue
            key = room_after if self._best_fit else -room
            if best is None or key < best_key:
                best, best_key = step, key
        return best

    def _empty(self) -> BackendStep | None:
        for step in self._steps:
            if step.restore_demand.program_count == 0:
                return step
        return None

    def _roomiest_room(self) -> float:
        return max((s.room_tokens() for s in self._steps), default=-1.0)


# ---- policies/thunder/paper.py ---------------------------------------------------------------



def pause_order(program: Program) -> tuple[int, int, ProgramId]:
    """S_pause (Eq. 11) as a sort key: acting first, then shortest context."""
    return (0 if program.phase is Phase.ACTING else 1, program.context_tokens, program.program_id)


def restore_class(program: Program) -> int:
    """S_restore's state term (Eq. 10): 0 reasoning (request ready), 1 new, 2 acting."""
    if program.is_new:
        return 1
    return 0 if program.phase is Phase.REASONING else 2


def queued_since_s(program: Program) -> float:
    return program.arrived_s if program.paused_since_s is None else program.paused_since_s


class ReferenceThunderPolicy:
    """Pause/restore by the thrashing check, one global queue, best-fit placement."""

    name = "thunder-reference"
    checks_before_dispatch = False

    def __init__(self, config: ThunderConfig = ThunderConfig()) -> None:
        self.config = config
        self.interval_s = config.interval_s
        # "restore-only" decay: the thrashing check counts acting programs in full
        self._check_decay_base = 1.0 if config.decay_when == "restore-only" else config.decay_base

    def route(self, view: ClusterView, program: Program) -> Route:
        if program.status is not Status.ACTIVE or program.backend is None:
            return Hold("new program, waits for restore" if program.is_new else "paused")
        if program.marked_for_pause:
            return Hold("marked for pause")
        if not any(b.backend_id == program.backend and b.healthy for b in view.backends):
            return Hold("backend unhealthy")
        return Dispatch(program.backend)

    def decide(self, view: ClusterView, trigger: Trigger) -> tuple[Decision, ...]:
        if not self.config.decide_on_events and trigger.kind is not TriggerKind.TICK:
            return ()
        steps, queue, stranded = self._group(view)
        decisions: list[Decision] = [Pause(p.program_id) for p in stranded]
        unbound: set[ProgramId] = set()
        for step in steps.values():
            decisions.extend(self._relieve(view.now_s, step, unbound))
        if queue:
            decisions.extend(self._restore(view.now_s, steps, queue, unbound))
        return tuple(decisions)

    def _group(self, view: ClusterView) -> tuple[dict[BackendId, BackendStep], list[Program], list[Program]]:
        """One pass: members and pause demand per healthy backend, the queue,
        and the unmarked programs stranded on unhealthy backends."""
        config = self.config
        steps = {b.backend_id: BackendStep(b.backend_id, b.capacity_tokens, config.lambda_max,
                                           config.shared_prefix_once)
                 for b in view.backends if b.healthy}
        queue: list[Program] = []
        stranded: list[Program] = []
        now_s, decay_base = view.now_s, self._check_decay_base
        for program in view.programs.values():
            status = program.status
            if status is Status.PAUSED:
                queue.append(program)
                continue
            if status is not Status.ACTIVE:
                continue
            step = steps.get(program.backend)  # type: ignore[arg-type]  # None is just not found
            if step is None:
                if not program.marked_for_pause:
                    stranded.append(program)
                continue
            step.members.append(program)
            if not program.marked_for_pause:
                step.pause_demand.add(program, decay_weight(program, now_s, decay_base))
        return steps, queue, stranded

    def _relieve(self, now_s: float, step: BackendStep, unbound: set[ProgramId]) -> list[Pause]:
        """Pauses that bring one backend back to lambda_max * capacity."""
        demand = step.pause_demand
        if not step.over_limit(demand):
            return []
        candidates = sorted((p for p in step.members if not p.marked_for_pause), key=pause_order)
        picked: list[tuple[Program, float]] = []
        for program in candidates:
            if not step.over_limit(demand):
                break
            weight = decay_weight(program, now_s, self._check_decay_base)
            demand.remove(program, weight)
            picked.append((program, weight))
        kept = self._unpick_spare(step, picked)
        unbound.update(p.program_id for p in kept if p.phase is Phase.ACTING)
        return [Pause(p.program_id) for p in kept]

    @staticmethod
    def _unpick_spare(step: BackendStep, picked: list[tuple[Program, float]]) -> list[Program]:
        """Drop earlier picks of the last pick's phase that the target no longer needs."""
        if len(picked) < 2:
            return [p for p, _ in picked]
        last_phase = picked[-1][0].phase
        spared: set[ProgramId] = set()
        for program, weight in reversed(picked[:-1]):
            if program.phase is not last_phase:
                continue
            step.pause_demand.add(program, weight)
            if not step.over_limit(step.pause_demand):
                spared.add(program.program_id)
            else:
                step.pause_demand.remove(program, weight)
        return [p for p, _ in picked if p.program_id not in spared]

    def _restore(self, now_s: float, steps: dict[BackendId, BackendStep], queue: list[Program],
                 unbound: set[ProgramId]) -> list[Restore]:
        targets = RestoreTargets(self._open_backends(now_s, steps.values(), unbound),
                                 self.config.placement, self.config.shared_prefix_once)
        if not targets:
            return []
        aged_before_s = now_s - self.config.starvation_s
        queue.sort(key=lambda p: (queued_since_s(p) > aged_before_s, restore_class(p),
                                  p.context_tokens, p.program_id))
        restores: list[Restore] = []
        for program in queue:
            target = targets.place(program, decay_weight(program, now_s, self.config.decay_base))
            if target is not None:
                restores.append(Restore(program.program_id, target.backend_id))
            elif queued_since_s(program) <= aged_before_s:
                targets.reserve_roomiest()
                if not targets:
                    break
        return restores

    def _open_backends(self, now_s: float, steps: Iterable[BackendStep],
                       unbound: set[ProgramId]) -> list[BackendStep]:
        """Count restore demand (marked programs still resident, decay always
        on) and return the backends below the low watermark."""
        open_steps = []
        for step in steps:
            demand = step.restore_demand
            for program in step.members:
                if program.program_id not in unbound:
                    demand.add(program, decay_weight(program, now_s, self.config.decay_base))
            if demand.total_tokens < self.config.lambda_min * demand.capacity_tokens:
                open_steps.append(step)
        return open_steps
