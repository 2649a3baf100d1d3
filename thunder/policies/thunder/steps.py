"""Where a ThunderAgent control step gets its per-backend numbers: the view or the index.

Both sources hand ``ProgramAwarePolicy._step`` the same things: programs
stranded on unhealthy backends, ``BackendStep``s of backends that may be over
their limit, the backends open for restores, and the queued programs worth
trying, so one implementation of the rules runs on either.

* ``ViewStep`` walks every program of the view once and adds demands in view
  order: the reference computation, exact.
* ``IndexedStep`` reads the ``ThunderIndex``: it builds a backend's step only
  when the check says it is over its limit (or open for restores), from
  approximate sums with error bounds, and offers only queued programs that
  could fit somewhere. Any comparison its bounds cannot settle raises
  ``Uncertain``; the policy then runs the step again from a ``ViewStep``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, Iterator

from thunder.core.program import BackendId, Program, ProgramId, Status
from thunder.core.view import ClusterView
from thunder.policies.thunder.certify import ROUNDING, Uncertain, compare
from thunder.policies.thunder.demand import BackendDemand, decay_weight
from thunder.policies.thunder.index import Slot, ThunderIndex, queued_since_s
from thunder.policies.thunder.placement import SLACK_TOKENS, BackendStep, RestoreTargets

if TYPE_CHECKING:
    from thunder.policies.thunder.paper_rules import ThunderConfig


class ViewStep:
    """One pass over the whole view (exact)."""

    def __init__(self, view: ClusterView, config: ThunderConfig, check_decay_base: float) -> None:
        self._now_s = view.now_s
        self._config = config
        self._steps: dict[BackendId, BackendStep] = {
            b.backend_id: BackendStep(b.backend_id, b.capacity_tokens, config.lambda_max, config.shared_prefix_once)
            for b in view.backends if b.healthy}
        self._queue: list[Program] = []
        self._stranded: list[Program] = []
        steps, now_s = self._steps, view.now_s
        for program in view.programs.values():
            status = program.status
            if status is Status.PAUSED:
                self._queue.append(program)
                continue
            if status is not Status.ACTIVE:
                continue
            step = steps.get(program.backend)  # type: ignore[arg-type]  # None is just not found
            if step is None:
                if not program.marked_for_pause:
                    self._stranded.append(program)
                continue
            step.members.append(program)
            if not program.marked_for_pause:
                step.pause_demand.add(program, decay_weight(program, now_s, check_decay_base))

    def stranded(self) -> list[Program]:
        """Unmarked programs on unhealthy backends, in view order."""
        return self._stranded

    def over_limit(self) -> Iterator[BackendStep]:
        """Every healthy backend's step, in view order (the caller checks the limit)."""
        return iter(self._steps.values())

    def has_queue(self) -> bool:
        return bool(self._queue)

    def open_steps(self, unbound: set[ProgramId]) -> list[BackendStep]:
        """Count restore demand (marked programs still resident, decay always
        on) and return the backends below the low watermark."""
        open_steps = []
        for step in self._steps.values():
            demand = step.restore_demand
            for program in step.members:
                if program.program_id not in unbound:
                    demand.add(program, decay_weight(program, self._now_s, self._config.decay_base))
            if demand.total_tokens < self._config.lambda_min * demand.capacity_tokens:
                open_steps.append(step)
        return open_steps

    def candidates(self, targets: RestoreTargets, aged_before_s: float, order: Callable) -> list[Program]:
        """The whole queue in restore order."""
        self._queue.sort(key=order)
        return self._queue


class IndexedStep:
    """The same numbers from the index, built lazily (approximate, certified)."""

    def __init__(self, index: ThunderIndex, config: ThunderConfig, check_decay_base: float, now_s: float) -> None:
        if index.stranded or index.latest_since_s > now_s or index.duplicate_backends:
            raise Uncertain  # rare: an unhealthy backend's programs, a phase in the future
        self._index = index
        self._config = config
        self._now_s = now_s
        self._check_scale = index.scale(check_decay_base, now_s)
        self._restore_scale = index.scale(config.decay_base, now_s)

    def stranded(self) -> list[Program]:
        return []

    def over_limit(self) -> Iterator[BackendStep]:
        """Steps of the backends over their limit, in view order, each with its thrashing-check demand."""
        config, scale, now_s, index = self._config, self._check_scale, self._now_s, self._index
        if now_s < index.cleared_s:  # time went back: the passes do not carry over
            index.unchecked.update(index.slots.values())
        elif not index.unchecked:
            return  # every check passed since its ledger last changed, and demand has only decayed
        for slot in index.slots.values():
            if slot not in index.unchecked:
                continue
            pause = slot.pause
            capacity_tokens = slot.backend.capacity_tokens
            limit_tokens = config.lambda_max * capacity_tokens
            if compare(*pause.total(scale), limit_tokens + SLACK_TOKENS, 0.0) <= 0:
                index.unchecked.discard(slot)
                index.cleared_s = now_s
                continue
            step = self._step(slot, pause_demand=pause.demand(capacity_tokens, config.shared_prefix_once, scale))
            step.members = list(slot.members.values())
            yield step

    def has_queue(self) -> bool:
        return bool(self._index.queue)

    def open_steps(self, unbound: set[ProgramId]) -> list[BackendStep]:
        """The open backends' steps with their restore demand; none if no
        restore can happen on them (``_may_restore``)."""
        config, scale = self._config, self._restore_scale
        found: list[tuple[Slot, BackendDemand | None]] = []
        most_room, empty = -math.inf, False
        now_s = self._now_s
        leaving = self._leaving(unbound)
        for slot in self._index.slots.values():  # the hot loop: compare() inlined
            restore = slot.restore
            capacity_tokens = slot.backend.capacity_tokens
            demand = None
            if leaving and slot in leaving:
                demand = self._without(slot, leaving[slot])
                total, error, count = demand.total_tokens, demand.total_error(), demand.program_count
            elif restore.version == slot.closed_version and slot.closed_from_s <= now_s <= slot.closed_until_s:
                continue  # certainly still closed: nothing changed, and not enough decay yet
            else:
                total, error = restore.total(scale)
                count = restore.count
            threshold = config.lambda_min * capacity_tokens
            if error:
                margin = error + ROUNDING * (abs(total) + threshold)
                if total - threshold > margin:
                    if demand is None:
                        self._closed(slot, total, margin, threshold)
                    continue
                if total - threshold >= -margin:
                    raise Uncertain
            elif total >= threshold:
                if demand is None:  # exact, and nothing in it decays: closed until it changes
                    slot.closed_version, slot.closed_from_s, slot.closed_until_s = restore.version, now_s, math.inf
                continue
            found.append((slot, demand))
            empty = empty or count == 0
            room = config.lambda_max * capacity_tokens - total
            most_room = max(most_room, room + error + ROUNDING * abs(room))
        if not found or not (empty or self._may_restore(most_room, len(found))):
            return []
        once = config.shared_prefix_once
        return [self._step(slot, restore_demand=demand or slot.restore.demand(slot.backend.capacity_tokens, once,
                                                                             scale))
                for slot, demand in found]

    def _closed(self, slot: Slot, total: float, margin: float, threshold: float) -> None:
        """Remember until when ``slot`` stays closed if its ledger does not change.

        ``margin`` bounds both how far the true demand and the reference's float
        are from ``total``; the bound only shrinks with time. The true demand is
        the weight-1 part plus a decaying part that shrinks by x^-dt, so the
        reference's demand stays at or above ``threshold`` while
        fixed + (decaying - margin) * x^-dt - margin >= threshold."""
        fixed = slot.restore.fixed_tokens()
        needed = threshold + margin - fixed  # what the decaying part must still weigh
        if needed <= 0:
            until_s = math.inf
        else:
            ratio = (total - fixed - margin) / needed
            if ratio <= 1:
                return
            until_s = self._now_s + 0.999 * math.log(ratio) / math.log(self._config.decay_base)
        slot.closed_version, slot.closed_from_s, slot.closed_until_s = slot.restore.version, self._now_s, until_s

    def _leaving(self, unbound: set[ProgramId]) -> dict[Slot, list[Program]]:
        """The programs unbound in this step, by the slot they leave."""
        leaving: dict[Slot, list[Program]] = {}
        for pid in unbound:
            program = self._index.programs[pid]
            leaving.setdefault(self._index.slots[program.backend], []).append(program)  # type: ignore[index]
        return leaving

    def _without(self, slot: Slot, leaving: list[Program]) -> BackendDemand:
        """Restore demand of ``slot`` without the programs unbound in this step
        (the reference never counts them)."""
        config = self._config
        demand = slot.restore.demand(slot.backend.capacity_tokens, config.shared_prefix_once, self._restore_scale)
        for program in leaving:
            demand.remove(program, decay_weight(program, self._now_s, config.decay_base))
        return demand

    def _may_restore(self, most_room: float, open_count: int) -> bool:
        """False only if, with no open backend empty, every queued program is
        certainly too big for ``most_room`` (a bound on the most room of any
        open backend), or the first aged ones are, one per open backend: each
        then reserves one, and nothing is restored."""
        bound = most_room + SLACK_TOKENS
        too_big_tokens = bound + abs(bound) * 1e-9 + 1e-6  # certainly rejected above this
        index, config, now_s = self._index, self._config, self._now_s
        if index.smallest_tokens(self._restore_scale) > too_big_tokens:
            return False
        scale = self._restore_scale
        for private_tokens, factor in index.aged_tokens(now_s - config.starvation_s):
            if factor is None:
                if private_tokens <= too_big_tokens:  # exactly the reference's weight * private_tokens
                    return True
            elif factor * private_tokens * scale * (1 - 1e-9) <= too_big_tokens:
                return True
            open_count -= 1
            if not open_count:
                return False
        return True

    def candidates(self, targets: RestoreTargets, aged_before_s: float, order: Callable) -> Iterator[Program]:
        """The queue in restore order, lazily, leaving out programs certain not to
        fit: first the aged ones (each may reserve a backend), then, once those are
        done, the others small enough for the most room left (all if a backend is empty)."""
        index = self._index
        yield from index.aged(aged_before_s)
        if targets.has_empty():
            rest = list(index.queue.values())
        else:
            room, error = targets.max_room()
            bound = room + SLACK_TOKENS + error
            rest = index.within(bound + abs(bound) * 1e-9 + 1e-6, self._restore_scale)
        rest = [p for p in rest if queued_since_s(p) > aged_before_s]
        rest.sort(key=order)
        yield from rest

    def _step(self, slot: Slot, **demands: BackendDemand) -> BackendStep:
        backend = slot.backend
        return BackendStep(backend.backend_id, backend.capacity_tokens, self._config.lambda_max,
                           self._config.shared_prefix_once, **demands)
