"""Applying a policy's decisions: the one code path the simulator and the proxy share.

``thunder.core.view`` states the scheduler's contract (a pause of a program whose request
is in an engine marks it and takes effect when the request returns; a restore of a
program with a held request dispatches it; stale decisions are ignored).
``DecisionApplier`` implements it once over the program views; ``SimCluster`` and
``LiveCluster`` supply the few things that differ between the worlds: the clock, whether
a program's request is in an engine, how held requests are sent, and what a pin can do.

Tool-resource decisions (``thunder.core.environments``) go through ``ToolApplier``, also
shared: it runs the tool policy after every control step (a hook the cluster runs, not a
subclass of it) and applies its decisions with the one refusal rule; each world supplies
only its host (``ToolHostControl``: the simulated one, or real sandboxes).
"""

from __future__ import annotations

import dataclasses
import operator
from abc import ABC, abstractmethod
from typing import Any, Callable, Protocol

from thunder.core.environments import (PrepareEnv, ReclaimEnv, ToolDecision, ToolHostView,
                                       reclaim_refused)
from thunder.core.policy import Policy, ToolPolicy
from thunder.core.program import BackendId, Phase, Program, ProgramId, Status
from thunder.core.view import ClusterView, Decision, Pause, Pin, Restore, Trigger


_PROGRAM_FIELDS = tuple(f.name for f in dataclasses.fields(Program))
_PROGRAM_INDEX = {name: i for i, name in enumerate(_PROGRAM_FIELDS)}
_program_values = operator.attrgetter(*_PROGRAM_FIELDS)
_program_setters = tuple(getattr(Program, name).__set__ for name in _PROGRAM_FIELDS)


def _replaced(view: Program, changes: dict[str, Any]) -> Program:
    """``dataclasses.replace(view, **changes)`` for the frozen ``Program`` (which has no
    ``__post_init__``) at under half the cost: a program's view changes a few times per
    step of the program."""
    values = list(_program_values(view))
    for name, value in changes.items():
        if name not in _PROGRAM_INDEX:
            raise TypeError(f"Program has no field {name!r}")
        values[_PROGRAM_INDEX[name]] = value
    new = object.__new__(Program)
    for set_field, value in zip(_program_setters, values):
        set_field(new, value)
    return new


class ProgramState(Protocol):
    """The mechanism-side counters every program keeps, in either world."""

    program_id: ProgramId
    last_backend: BackendId | None
    started_s: float | None
    pauses: int
    restores: int
    migrations: int
    queue_s: float


def note_dispatch(program: ProgramState, backend: BackendId, ready_s: float, now_s: float) -> float:
    """A program's request leaves the proxy for ``backend``: the bookkeeping both worlds
    keep (seconds it waited there, where it last ran, when it first ran). Returns the wait."""
    waited = now_s - ready_s
    program.queue_s += waited
    program.last_backend = backend
    if program.started_s is None:
        program.started_s = now_s
    return waited


ControlHook = Callable[[Trigger], None]


class DecisionApplier(ABC):
    policy: Policy
    programs: dict[ProgramId, Any]  # ProgramState of each world
    views: dict[ProgramId, Program]
    control_steps: int  # each world counts its control steps from 0
    # Composed, not inherited: what else runs on each control step (see ``control``).
    # Each world's constructor makes its own lists.
    before_control: list[ControlHook]
    after_control: list[ControlHook]

    # -- what each world supplies ------------------------------------------------------

    @abstractmethod
    def snapshot(self) -> ClusterView: ...

    @abstractmethod
    def now(self) -> float: ...

    @abstractmethod
    def _log(self, action: str, program_id: ProgramId, backend: BackendId | None, reason: str = "") -> None: ...

    @abstractmethod
    def _in_engine(self, program: Any) -> bool:
        """A request of the program is being served (a pause must wait for it)."""

    @abstractmethod
    def _dispatch_held(self, program: Any, backend: BackendId) -> None:
        """Send the program's held requests, if any, to ``backend``."""

    @abstractmethod
    def _pin(self, program: Any, backend: BackendId, until_s: float) -> None: ...

    # -- the contract ----------------------------------------------------------------

    def control(self, trigger: Trigger) -> list[Decision]:
        """One control step: hooks that must see the trigger first, the policy's decisions
        applied in order, then hooks that run after every step (the tool policy)."""
        self.control_steps += 1
        for hook in self.before_control:
            hook(trigger)
        decisions = list(self.policy.decide(self.snapshot(), trigger))
        for decision in decisions:
            self.apply(decision)
        for hook in self.after_control:
            hook(trigger)
        return decisions

    def apply(self, decision: Decision) -> None:
        program = self.programs.get(decision.program_id)
        if program is None:
            return  # finished or released in the meantime
        view = self.views[program.program_id]
        if isinstance(decision, Pause):
            if view.status is not Status.ACTIVE:
                return
            if view.phase is Phase.REASONING and self._in_engine(program):
                self._update(program.program_id, marked_for_pause=True)
                self._log("mark", program.program_id, view.backend)
            else:
                self._pause(program, reason="policy")
        elif isinstance(decision, Restore):
            if view.status is not Status.PAUSED:
                return
            self._activate(program, decision.backend)
            self._log("restore", program.program_id, decision.backend)
            self._dispatch_held(program, decision.backend)
        elif isinstance(decision, Pin):
            backend = view.backend if view.backend is not None else program.last_backend
            if backend is not None:
                self._pin(program, backend, decision.until_s)

    def _update(self, program_id: ProgramId, **changes: Any) -> Program:
        view = _replaced(self.views[program_id], changes)
        self.views[program_id] = view
        return view

    def _pause(self, program: ProgramState, reason: str) -> None:
        view = self.views[program.program_id]
        self._update(program.program_id, status=Status.PAUSED, backend=None, marked_for_pause=False,
                     paused_since_s=self.now())
        program.pauses += 1
        self._log("pause", program.program_id, view.backend, reason)

    def _activate(self, program: ProgramState, backend: BackendId) -> None:
        view = self.views[program.program_id]
        if view.status is Status.ACTIVE and view.backend == backend and view.paused_since_s is None:
            return  # already there: the common case of a program's next request
        if view.status is Status.PAUSED and not view.is_new:
            program.restores += 1
            if program.last_backend is not None and backend != program.last_backend:
                program.migrations += 1
                self._log("migrate", program.program_id, backend)
        self._update(program.program_id, status=Status.ACTIVE, backend=backend, paused_since_s=None)


class ToolHostControl(Protocol):
    """What a world's tool host offers the shared applier (the simulated host, or sandboxes)."""

    def snapshot(self, cluster: ClusterView) -> ToolHostView: ...

    def prepare(self, program_id: ProgramId, ahead: bool) -> bool:
        """Start preparing (or queue); False if there was nothing to do."""
        ...

    def reclaim(self, program_id: ProgramId, reason: str) -> bool:
        """Tear down (or cancel); False if there was nothing to do."""
        ...


class ToolApplier:
    """Runs a tool-resource policy over a host and applies its decisions, in either world.

    ``log(action, program_id, reason)`` writes the decisions table: actions are
    ``env_prepare``, ``env_reclaim`` and ``env_refuse_reclaim`` (never under a
    running step: ``reclaim_refused``), beside the scheduler's own."""

    def __init__(self, policy: ToolPolicy, host: ToolHostControl,
                 log: Callable[[str, ProgramId, str], None]) -> None:
        self.policy = policy
        self.host = host
        self.log = log
        self.refused = 0

    def step(self, cluster: ClusterView) -> list[ToolDecision]:
        host = self.host.snapshot(cluster)
        decisions = list(self.policy.decide(cluster, host))
        for decision in decisions:
            self.apply(decision, cluster, host)
        return decisions

    def apply(self, decision: ToolDecision, cluster: ClusterView, host: ToolHostView) -> None:
        program_id = decision.program_id
        if isinstance(decision, PrepareEnv):
            if self.host.prepare(program_id, ahead=decision.reason == "ahead"):
                self.log("env_prepare", program_id, decision.reason)
            return
        assert isinstance(decision, ReclaimEnv)
        # Views of the host and the programs as the policy saw them: a decision applied
        # earlier in the same step changes neither the program's phase nor its binding.
        env = host.envs.get(program_id)
        if env is not None and reclaim_refused(env, cluster.programs.get(program_id)):
            self.refused += 1
            self.log("env_refuse_reclaim", program_id, decision.reason)
        elif self.host.reclaim(program_id, decision.reason):
            self.log("env_reclaim", program_id, decision.reason)
