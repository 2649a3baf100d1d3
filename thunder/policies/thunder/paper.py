"""ThunderAgent's program-aware scheduler (paper, section 4.3).

Source: Kang et al., "ThunderAgent", sections 4.3.1-4.3.2 and appendix E.
One control step runs on every trigger (the dt tick, every ``interval_s``
as driven by the mechanism, and each event):

1. Thrashing check per healthy backend (Eq. 7): demand = sum of c_p over
   reasoning programs + c_q * f(t_q) over acting ones, f(t) = x^-t with t the
   seconds the program has been acting (the continuous-time form of
   appendix E.1). Programs already marked for pause count as freed. While
   demand > lambda_max * capacity, pause by S_pause (Eq. 11): acting before
   reasoning, shortest context first, ties by id. Pausing a reasoning
   program only marks it (it is unbound when its request completes); it
   counts as freed at once, so later steps never re-pause for the same
   overflow.
2. Restore from one global queue (all paused programs, any former backend)
   by S_restore (Eq. 10): reasoning (request ready) > new > acting, shortest
   context first, ties by id. Priority decides WHO is restored next; the
   placement rule decides WHERE: best fit = the backend whose room left
   after placing is smallest but not negative (``policies.placement``).
   Classic best-fit-decreasing also orders items largest first; Eq. 10
   already fixes the order, so only the best-fit half is kept. A backend
   takes restores only if its demand was below lambda_min * capacity at the
   start of the step, and only while each restore keeps it at or below
   lambda_max * capacity (the hysteresis window). Restored tokens count at
   once. A program may be restored onto another backend than before (memory
   balancing, 4.3.2).

Choices the paper leaves open (ours):
* The restore gate counts marked programs as still resident (their request
  is still running, so their memory is not free yet), and counts acting
  programs with decay in both ``decay_when`` modes.
* Shared prefix (``shared_prefix_once``): see ``policies.demand``.
* Pause refinement: after the greedy shortest-first picks reach the target,
  earlier picks of the same phase as the last one are un-picked, largest
  first, while the target still holds. This serves Eq. 9 (min sum c^2): if
  one long program frees enough, the short ones picked before it stay.
* Head-of-line blocking: a candidate that fits nowhere is skipped, and
  those behind it may still be restored. Two guards keep big programs from
  starving: (a) a candidate that fits nowhere is restored anyway onto a
  healthy backend with no programs at all, where it cannot thrash anyone;
  (b) a program queued for at least ``starvation_s`` (since
  ``paused_since_s``, else ``arrived_s``) goes ahead of all others (aged
  ones among themselves by Eq. 10), and if it fits nowhere it reserves the
  open backend with the most room: nothing else is restored there, so that
  backend drains until the program fits, or until it is empty and (a)
  applies.
* Programs on an unhealthy backend are paused (re-queued); they are
  restored elsewhere from the next step on. Nothing is restored onto an
  unhealthy backend.

Departures of the public ThunderAgent code from the paper, and the flags
that reproduce them: it places on the backend with the most free space
(``placement="most-free"``); it applies decay only when computing room for
restores (``decay_when="restore-only"``); it counts every program's full
context, shared prefix included (``shared_prefix_once=False``); it decides
only on its 5 s timer (``decide_on_events=False``).

Speed: ``decide`` runs on every event, so it does not walk every program.
It keeps a ``ThunderIndex`` (per-backend demand sums and the sorted queue)
up to date from the programs that can have changed: the trigger's, those its
last decisions named, and those ``route`` saw. It checks every program by
identity on each tick and rebuilds the index when the backends or the
program count disagree. The index's sums are approximate with error bounds;
when a comparison is too close to call (``certify.Uncertain``) the step is
recomputed from the whole view, exactly as before the index existed, so the
decisions are the same as walking every program on every call.
"""

from __future__ import annotations

from typing import Iterable

from thunder.core.program import Phase, Program, ProgramId
from thunder.core.view import ClusterView, Decision, Pause, Restore, Route, Trigger, TriggerKind
from thunder.policies.thunder.certify import Uncertain
from thunder.policies.thunder.demand import decay_weight
from thunder.policies.thunder.index import ThunderIndex, queued_since_s
from thunder.policies.thunder.paper_rules import ThunderConfig, aged_order, pause_order, restore_order
from thunder.policies.thunder.placement import BackendStep, RestoreTargets, route_bound
from thunder.policies.thunder.steps import IndexedStep, ViewStep

class ProgramAwarePolicy:
    """Pause/restore by the thrashing check, one global queue, best-fit placement."""

    name = "thunder-paper"
    checks_before_dispatch = False  # the paper routes first, then checks

    @property
    def interval_s(self) -> float:
        return self.config.interval_s

    def __init__(self, config: ThunderConfig = ThunderConfig()) -> None:
        self.config = config
        # "restore-only" decay: the thrashing check counts acting programs in full
        self._check_decay_base = 1.0 if config.decay_when == "restore-only" else config.decay_base
        self._index: ThunderIndex | None = None
        self._changed: set[ProgramId] = set()  # may differ from the index: routed, or named by decisions
        self.exact_steps = 0  # steps recomputed from the whole view (the index's sums were too close to call)

    def route(self, view: ClusterView, program: Program) -> Route:
        self._changed.add(program.program_id)  # a Hold makes the mechanism pause or mark it
        return route_bound(view, program)

    def decide(self, view: ClusterView, trigger: Trigger) -> tuple[Decision, ...]:
        if not self.config.decide_on_events and trigger.kind is not TriggerKind.TICK:
            return ()
        index = self._sync(view, trigger)
        try:
            decisions = self._step(view.now_s, IndexedStep(index, self.config, self._check_decay_base, view.now_s))
        except Uncertain:  # too close to call from the index's sums: walk the whole view
            self.exact_steps += 1
            decisions = self._step(view.now_s, ViewStep(view, self.config, self._check_decay_base))
        self._changed = {d.program_id for d in decisions}
        return decisions

    def _sync(self, view: ClusterView, trigger: Trigger) -> ThunderIndex:
        """The index, brought up to date with ``view``."""
        index, programs = self._index, view.programs
        if index is None or not index.fits(view.backends, view.now_s):
            return self._rebuild(view)
        if trigger.kind is TriggerKind.TICK:  # check everything, by identity: cheap, and fixes any drift
            known = index.programs
            for program_id, program in programs.items():
                if known.get(program_id) is not program:
                    index.refresh(program_id, program)
            if len(known) != len(programs):
                for program_id in [pid for pid in known if pid not in programs]:
                    index.refresh(program_id, None)
            return index
        changed = self._changed
        if trigger.program_id is not None:
            changed.add(trigger.program_id)
        for program_id in changed:
            index.refresh(program_id, programs.get(program_id))
        if len(index.programs) != len(programs):
            return self._rebuild(view)
        return index

    def _rebuild(self, view: ClusterView) -> ThunderIndex:
        config = self.config
        index = ThunderIndex(view.backends, view.now_s, self._check_decay_base, config.decay_base,
                             config.shared_prefix_once, aged_order)
        for program_id, program in view.programs.items():
            index.refresh(program_id, program)
        self._index = index
        return index

    def _step(self, now_s: float, source: IndexedStep | ViewStep) -> tuple[Decision, ...]:
        """One control step over per-backend numbers from ``source``."""
        decisions: list[Decision] = [Pause(p.program_id) for p in source.stranded()]
        unbound: set[ProgramId] = set()
        for step in source.over_limit():
            decisions.extend(self._relieve(now_s, step, unbound))
        open_steps = source.open_steps(unbound) if source.has_queue() else []
        if open_steps:
            targets = RestoreTargets(open_steps, self.config.placement, self.config.shared_prefix_once)
            if targets:
                aged_before_s = now_s - self.config.starvation_s
                queue = source.candidates(targets, aged_before_s, restore_order(aged_before_s))
                decisions.extend(self._place(now_s, targets, queue, aged_before_s))
        return tuple(decisions)

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

    def _place(self, now_s: float, targets: RestoreTargets, queue: Iterable[Program],
               aged_before_s: float) -> list[Restore]:
        """Restores for the queue, in priority order, onto the open backends."""
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
