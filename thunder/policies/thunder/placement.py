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

Demands may be approximate (``BackendDemand.approximate``); every comparison
goes through ``certify.compare``, which raises ``Uncertain`` when the bounds
cannot tell which way the exact demands would compare.
"""

from __future__ import annotations

from thunder.core.program import BackendId, Program, Status
from thunder.core.view import ClusterView, Dispatch, Hold, Route
from thunder.policies.thunder.certify import compare, rounded
from thunder.policies.thunder.demand import BackendDemand, split_tokens

# Demand sums weighted floats; ignore sub-token rounding so that removing and
# re-adding a program never turns "exactly at the limit" into "over it".
SLACK_TOKENS = 1e-6


class BackendStep:
    """One healthy backend during one control step."""

    __slots__ = ("backend_id", "limit_tokens", "members", "pause_demand", "restore_demand")

    def __init__(self, backend_id: BackendId, capacity_tokens: int, lambda_max: float,
                 shared_prefix_once: bool, pause_demand: BackendDemand | None = None,
                 restore_demand: BackendDemand | None = None) -> None:
        self.backend_id = backend_id
        self.limit_tokens = lambda_max * capacity_tokens
        self.members: list[Program] = []  # ACTIVE programs bound here, marked ones included
        self.pause_demand = pause_demand or BackendDemand(capacity_tokens, shared_prefix_once)
        # filled lazily
        self.restore_demand = restore_demand or BackendDemand(capacity_tokens, shared_prefix_once)

    def room(self) -> tuple[float, float]:
        """(tokens left under the limit, its error bound)."""
        room = self.limit_tokens - self.restore_demand.total_tokens
        return room, rounded(self.restore_demand.total_error(), room)

    def over_limit(self, demand: BackendDemand) -> bool:
        return compare(demand.total_tokens, demand.total_error(), self.limit_tokens + SLACK_TOKENS, 0.0) > 0


class RestoreTargets:
    """The backends open for restores in this step, and the placement rule."""

    def __init__(self, open_steps: list[BackendStep], placement: str, shared_prefix_once: bool) -> None:
        self._steps = sorted(open_steps, key=lambda s: s.backend_id)
        self._rooms = [s.room() for s in self._steps]  # (room_tokens, error) of each step
        self._best_fit = placement == "best-fit"
        self._shared_prefix_once = shared_prefix_once
        self._maybe_empty = True  # until _empty finds none: steps never become empty again
        self._max_room, self._max_room_error = self._roomiest_room()

    def __bool__(self) -> bool:
        return bool(self._steps)

    def max_room(self) -> tuple[float, float]:
        """(the most room any open backend has, its error bound)."""
        return self._max_room, self._max_room_error

    def has_empty(self) -> bool:
        return self._empty() is not None

    def place(self, program: Program, weight: float) -> BackendStep | None:
        """The chosen backend, already charged with ``program``; None if none."""
        at = self._fitting(program, weight)
        if at is None:
            at = self._empty()
        if at is None:
            return None
        target = self._steps[at]
        target.restore_demand.add(program, weight)
        self._rooms[at] = target.room()
        self._max_room, self._max_room_error = self._roomiest_room()
        return target

    def reserve_roomiest(self) -> None:
        """Take the backend with the most room out of this step (it drains for an aged program)."""
        rooms = self._rooms
        roomiest = 0
        for at in range(1, len(rooms)):  # in id order, so only strictly more room wins
            if compare(*rooms[at], *rooms[roomiest]) > 0:
                roomiest = at
        del self._steps[roomiest], rooms[roomiest]
        self._max_room, self._max_room_error = self._roomiest_room()

    def _fitting(self, program: Program, weight: float) -> int | None:
        _, private_tokens = split_tokens(program, self._shared_prefix_once)
        if compare(weight * private_tokens, 0.0, self._max_room + SLACK_TOKENS, self._max_room_error) > 0:
            return None  # cheap reject: too big even where its prefix is already held
        best: int | None = None
        best_key, best_error = 0.0, 0.0
        for at, step in enumerate(self._steps):  # in id order, so strict < keeps the lowest id on ties
            room, room_error = self._rooms[at]
            room_after = room - step.restore_demand.added_by(program, weight)
            after_error = rounded(room_error, room_after)
            if compare(room_after, after_error, -SLACK_TOKENS, 0.0) < 0:
                continue
            key, key_error = (room_after, after_error) if self._best_fit else (-room, room_error)
            if best is None or compare(key, key_error, best_key, best_error) < 0:
                best, best_key, best_error = at, key, key_error
        return best

    def _empty(self) -> int | None:
        if self._maybe_empty:
            for at, step in enumerate(self._steps):
                if step.restore_demand.program_count == 0:
                    return at
            self._maybe_empty = False
        return None

    def _roomiest_room(self) -> tuple[float, float]:
        """The largest room (as a float, exactly the max of the rooms) and the largest error."""
        rooms = self._rooms
        if not rooms:
            return -1.0, 0.0
        return max(r for r, _ in rooms), max(e for _, e in rooms)


def route_bound(view: ClusterView, program: Program) -> Route:
    """The program-aware route: a ready request goes to the backend its program is
    bound to, if that is healthy; a new, paused or marked program's request is held
    (the mechanism queues it until a ``Restore``)."""
    if program.status is not Status.ACTIVE or program.backend is None:
        return Hold("new program, waits for restore" if program.is_new else "paused")
    if program.marked_for_pause:
        return Hold("marked for pause")
    for backend in view.backends:
        if backend.backend_id == program.backend and backend.healthy:
            return Dispatch(program.backend)
    return Hold("backend unhealthy")
