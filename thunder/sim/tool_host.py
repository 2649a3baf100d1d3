"""A simulated tool host: disk and ports shared by the programs' environments.

Mechanism only: it prepares and tears down environments when told to
(``prepare``, ``reclaim``), and never decides which. Disk and ports are held
from the start of preparation until teardown; preparation takes the
environment's ``setup_s`` of simulated time. A preparation that does not fit
waits in a FIFO, as a real host waits for disk (``docker pull`` fails with no
space left; the orchestrator retries), and starts when room frees; the
programs held for it wait too, and the records say so.

Records: one row per environment instance (a program's env prepared again
after an idle teardown is a second instance) and a step-function time series
of disk, ports and environment counts, one row per change.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, deque
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable

import simpy

from thunder.core.environments import LIVE_STATES, EnvResources, EnvState, EnvView, ToolHostView
from thunder.core.program import ProgramId


@dataclass(frozen=True, slots=True)
class SimHostConfig:
    """One tool host. Capacities of None are unlimited; ``default_*`` fill what a trace's ``env`` lacks."""

    disk_capacity_bytes: int | None = None
    ports_capacity: int | None = None
    # The paper measures OpenHands sandboxes at above 10 GB on average.
    default_disk_bytes: int = 10 * 10**9
    default_ports: int = 1
    env_seed: int = 0  # setup times drawn for programs whose trace has none
    # Preparations waiting for room, none running and no event for this long: the host is
    # out of room for good and the run stops (longer than any tool call in the bundled traces).
    stall_s: float = 900.0


@dataclass(slots=True, eq=False)
class _Instance:
    """One preparation of one program's environment, from request to teardown."""

    program_id: ProgramId
    instance: int
    resources: EnvResources
    ahead: bool
    requested_s: float
    started_s: float | None = None
    ready_s: float | None = None
    reclaimed_s: float | None = None
    reclaim_reason: str | None = None
    wait_s: float = 0.0  # the program was held for this environment
    blocked_on: str | None = None  # "disk" or "ports" if it ever waited for room

    def row(self) -> dict[str, Any]:
        res = self.resources
        return {"program_id": self.program_id, "instance": self.instance, "disk_bytes": res.disk_bytes,
                "ports": res.ports, "setup_s": res.setup_s, "ahead": self.ahead,
                "requested_s": self.requested_s, "started_s": self.started_s, "ready_s": self.ready_s,
                "reclaimed_s": self.reclaimed_s, "reclaim_reason": self.reclaim_reason,
                "wait_s": self.wait_s, "blocked_on": self.blocked_on}


class ToolHost:
    def __init__(self, env: simpy.Environment, config: SimHostConfig,
                 on_change: Callable[[], object] = lambda: None) -> None:
        self.env = env
        self.config = config
        self.on_change = on_change  # an environment became ready: let the policy look again
        self.views: dict[ProgramId, EnvView] = {}
        self._readonly = MappingProxyType(self.views)
        self._current: dict[ProgramId, _Instance] = {}
        self._count: dict[ProgramId, int] = {}
        self._pending: deque[ProgramId] = deque()
        self._waiters: dict[ProgramId, list[Callable[[], None]]] = {}
        self._blocked_since: dict[ProgramId, float] = {}
        self._states: Counter[EnvState] = Counter()
        self.disk_used = self.disk_pending = self.ports_used = self.ports_pending = 0
        self.closed_rows: list[dict[str, Any]] = []
        self.series: list[dict[str, Any]] = []
        self.last_progress_s = 0.0
        self.stalled_at_s: float | None = None

    # -- what the policy sees ----------------------------------------------------------

    def snapshot(self) -> ToolHostView:
        cfg = self.config
        return ToolHostView(now_s=self.env.now, disk_capacity_bytes=cfg.disk_capacity_bytes,
                            disk_used_bytes=self.disk_used, disk_pending_bytes=self.disk_pending,
                            ports_capacity=cfg.ports_capacity, ports_used=self.ports_used,
                            ports_pending=self.ports_pending, envs=self._readonly)

    def is_ready(self, program_id: ProgramId) -> bool:
        view = self.views.get(program_id)
        return view is not None and view.state is EnvState.READY

    @property
    def waiting_programs(self) -> int:
        """Programs held now because their environment is not ready."""
        return len(self._blocked_since)

    @property
    def stuck(self) -> bool:
        """Out of room for good: preparations wait, none runs, nothing happened for ``stall_s``."""
        return (bool(self._pending) and not self._states[EnvState.PREPARING]
                and self.env.now - self.last_progress_s >= self.config.stall_s)

    # -- program lifecycle (called by the cluster) ------------------------------------

    def register(self, program_id: ProgramId, resources: EnvResources) -> None:
        self.views[program_id] = EnvView(program_id, EnvState.NONE, resources, state_since_s=self.env.now)
        self._states[EnvState.NONE] += 1

    def block(self, program_id: ProgramId, resume: Callable[[], None]) -> None:
        """The program is held until its environment is ready; ``resume`` runs then."""
        now = self.env.now
        self._waiters.setdefault(program_id, []).append(resume)
        if program_id not in self._blocked_since:
            self._blocked_since[program_id] = now
            self._replace(program_id, needed_since_s=now)
            self._sample()

    def set_in_use(self, program_id: ProgramId, in_use: bool) -> None:
        view = self.views.get(program_id)
        if view is not None:
            self._replace(program_id, in_use=in_use, last_used_s=self.env.now)

    def release(self, program_id: ProgramId) -> None:
        view = self.views.get(program_id)
        if view is None:
            return
        if view.state in LIVE_STATES:
            self._replace(program_id, released=True, in_use=False)
        else:
            self._forget(program_id)

    def progress(self) -> None:
        self.last_progress_s = self.env.now

    # -- applying decisions ------------------------------------------------------------

    def prepare(self, program_id: ProgramId, ahead: bool) -> bool:
        view = self.views.get(program_id)
        if view is None or view.released or view.state not in (EnvState.NONE, EnvState.RECLAIMED):
            return False
        number = self._count.get(program_id, 0)
        self._count[program_id] = number + 1
        res = view.resources
        self._current[program_id] = _Instance(program_id, number, res, ahead and view.needed_since_s is None,
                                              requested_s=self.env.now)
        self._set_state(program_id, EnvState.PENDING)
        self.disk_pending += res.disk_bytes
        self.ports_pending += res.ports
        self._pending.append(program_id)
        self._admit()
        self._sample()
        return True

    def reclaim(self, program_id: ProgramId, reason: str) -> bool:
        view = self.views.get(program_id)
        if view is None or view.state not in LIVE_STATES:
            return False
        res = view.resources
        if view.state is EnvState.PENDING:
            self._pending.remove(program_id)
            self.disk_pending -= res.disk_bytes
            self.ports_pending -= res.ports
        else:
            self.disk_used -= res.disk_bytes
            self.ports_used -= res.ports
        instance = self._current.pop(program_id)
        instance.reclaimed_s, instance.reclaim_reason = self.env.now, reason
        self.closed_rows.append(instance.row())
        self.progress()
        if view.released:
            self._forget(program_id)
        else:
            self._set_state(program_id, EnvState.RECLAIMED)
        self._admit()
        self._sample()
        return True

    # -- mechanics ---------------------------------------------------------------------

    def _admit(self) -> None:
        """Start pending preparations in FIFO order while the head fits."""
        cap_disk, cap_ports = self.config.disk_capacity_bytes, self.config.ports_capacity
        while self._pending:
            head = self._pending[0]
            res = self.views[head].resources
            short = ("disk" if cap_disk is not None and self.disk_used + res.disk_bytes > cap_disk else
                     "ports" if cap_ports is not None and self.ports_used + res.ports > cap_ports else None)
            if short is not None:
                for program_id in self._pending:  # everyone behind the head waits for the same room
                    instance = self._current[program_id]
                    instance.blocked_on = instance.blocked_on or short
                return
            self._pending.popleft()
            self.disk_pending -= res.disk_bytes
            self.ports_pending -= res.ports
            self.disk_used += res.disk_bytes
            self.ports_used += res.ports
            self._current[head].started_s = self.env.now
            self._set_state(head, EnvState.PREPARING)
            self.env.process(self._prepare(head, self._current[head]))

    def _prepare(self, program_id: ProgramId, instance: _Instance):
        yield self.env.timeout(instance.resources.setup_s)
        if self._current.get(program_id) is not instance:
            return  # torn down while preparing
        now = self.env.now
        instance.ready_s = now
        self._set_state(program_id, EnvState.READY)
        self._replace(program_id, last_used_s=now, needed_since_s=None)
        self.progress()
        blocked = self._blocked_since.pop(program_id, None)
        if blocked is not None:
            instance.wait_s += now - blocked
        self._sample()
        for resume in self._waiters.pop(program_id, []):
            resume()
        self.on_change()

    def _replace(self, program_id: ProgramId, **changes: Any) -> None:
        self.views[program_id] = dataclasses.replace(self.views[program_id], **changes)

    def _set_state(self, program_id: ProgramId, state: EnvState) -> None:
        self._states[self.views[program_id].state] -= 1
        self._states[state] += 1
        self._replace(program_id, state=state, state_since_s=self.env.now)

    def _forget(self, program_id: ProgramId) -> None:
        self._states[self.views.pop(program_id).state] -= 1
        self._waiters.pop(program_id, None)
        self._blocked_since.pop(program_id, None)

    def _sample(self) -> None:
        states = self._states
        self.series.append({
            "time_s": self.env.now, "disk_used_bytes": self.disk_used, "disk_pending_bytes": self.disk_pending,
            "disk_capacity_bytes": self.config.disk_capacity_bytes, "ports_used": self.ports_used,
            "envs_pending": states[EnvState.PENDING], "envs_preparing": states[EnvState.PREPARING],
            "envs_ready": states[EnvState.READY], "programs_waiting_env": len(self._blocked_since),
        })

    # -- results -----------------------------------------------------------------------

    def environment_rows(self) -> list[dict[str, Any]]:
        """Every instance so far; live ones (never reclaimed) have ``reclaimed_s`` None, and
        the wait of a program still held counts up to now."""
        rows = list(self.closed_rows)
        now = self.env.now
        for program_id, instance in self._current.items():
            row = instance.row()
            blocked = self._blocked_since.get(program_id)
            if blocked is not None:
                row["wait_s"] += now - blocked
            rows.append(row)
        return rows


__all__ = ["ToolHost", "SimHostConfig"]
