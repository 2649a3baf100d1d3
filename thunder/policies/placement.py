"""Where ThunderAgent's restores go: the backends open for restores in one step.

``RestoreTargets`` holds the healthy backends whose demand was under the low
watermark at the start of the step and places programs on them one at a
time, counting each restore at once so a step never overfills a backend.

* ``best-fit`` (the paper's best-fit-decreasing placement): the backend whose
  room left after placing is smallest but not negative.
* ``most-free`` (the public ThunderAgent code): the backend with the most room.

Ties go to the lowest backend id. A program that fits nowhere goes to a
backend with no programs at all, if there is one: alone it cannot thrash
anyone, and without this a program larger than any backend would starve.
"""

from __future__ import annotations

from thunder.policies.demand import BackendDemand, split_tokens
from thunder.program import BackendId, Program

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
