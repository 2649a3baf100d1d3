"""The indexed ThunderAgent policy decides exactly as the walk-everything reference.

A small model of the mechanism (the contract in ``thunder.core.view``, applied
as ``SimCluster`` applies it) drives both policies through the same random
histories: programs arrive, are dispatched or held, finish requests and
tools, are marked, paused and restored per the decisions, and end; time
moves, backends fail and recover. Every ``route`` and ``decide`` answer must
be identical, call by call.
"""

from __future__ import annotations

import dataclasses
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference_thunder import ReferenceThunderPolicy

from thunder.core.program import Phase, Program, Status
from thunder.core.view import (TICK, BackendView, ClusterView, Dispatch, Pause, Restore, Trigger,
                             TriggerKind)
from thunder.policies.thunder.paper import ProgramAwarePolicy, ThunderConfig

watermarks = st.sampled_from([(1.0, 1.0), (0.9, 0.9), (0.8, 1.0), (0.5, 0.9)])
configs = st.builds(
    lambda marks, **options: ThunderConfig(lambda_min=marks[0], lambda_max=marks[1], **options),
    watermarks,
    decay_base=st.sampled_from([1.0, 2.0, 2.0, 1.5, 8.0]),
    shared_prefix_once=st.booleans(),
    placement=st.sampled_from(["best-fit", "most-free"]),
    decay_when=st.sampled_from(["always", "restore-only"]),
    decide_on_events=st.sampled_from([True, True, True, False]),
    starvation_s=st.sampled_from([60.0, 4.0, 0.0, math.inf]),
)


class Mechanism:
    """The mechanism's side of the contract, for both policies at once."""

    def __init__(self, new: ProgramAwarePolicy, reference: ReferenceThunderPolicy,
                 capacities: list[int]) -> None:
        self.new, self.reference = new, reference
        self.now_s = 0.0
        self.backends = [BackendView(i, c) for i, c in enumerate(capacities)]
        self.views: dict[str, Program] = {}
        self.counter = 0
        self.calls = 0

    def view(self) -> ClusterView:
        return ClusterView(self.now_s, tuple(self.backends), self.views)

    def update(self, pid: str, **changes) -> Program:
        self.views[pid] = dataclasses.replace(self.views[pid], **changes)
        return self.views[pid]

    def control(self, trigger: Trigger) -> None:
        view = self.view()
        expected = tuple(self.reference.decide(view, trigger))
        got = tuple(self.new.decide(view, trigger))
        self.calls += 1
        assert got == expected, f"call {self.calls} {trigger}: {got} != {expected}"
        for decision in got:
            self.apply(decision)

    def apply(self, decision) -> None:
        program = self.views.get(decision.program_id)
        if program is None:
            return
        if isinstance(decision, Pause) and program.status is Status.ACTIVE:
            if program.phase is Phase.REASONING and not program.waiting:
                self.update(program.program_id, marked_for_pause=True)
            else:
                self.pause(program.program_id)
        elif isinstance(decision, Restore) and program.status is Status.PAUSED:
            self.update(program.program_id, status=Status.ACTIVE, backend=decision.backend,
                        paused_since_s=None, waiting=False)

    def pause(self, pid: str) -> None:
        self.update(pid, status=Status.PAUSED, backend=None, marked_for_pause=False, paused_since_s=self.now_s)

    def ready(self, pid: str, kind: TriggerKind) -> None:
        """A request is ready (arrival or tool done): route it, then control."""
        program = self.views[pid]
        view = self.view()
        route = self.new.route(view, program)
        assert route == self.reference.route(view, program)
        if isinstance(route, Dispatch):
            self.update(pid, status=Status.ACTIVE, backend=route.backend, paused_since_s=None, waiting=False)
        elif program.status is Status.ACTIVE:
            self.pause(pid)
        self.control(Trigger(kind, pid))

    def arrive(self, tokens: int, prefix: tuple[str | None, int]) -> None:
        self.counter += 1
        pid = f"p{self.counter:03d}"
        self.views[pid] = Program(pid, tokens, Phase.REASONING, Status.PAUSED, None, self.now_s, self.now_s,
                                  steps_done=0, waiting=True, shared_prefix_id=prefix[0],
                                  shared_prefix_tokens=prefix[1], paused_since_s=self.now_s)
        self.ready(pid, TriggerKind.ARRIVAL)

    def tool_done(self, pid: str, grow: int) -> None:
        program = self.views[pid]
        self.update(pid, phase=Phase.REASONING, phase_since_s=self.now_s, waiting=True,
                    context_tokens=program.context_tokens + grow)
        self.ready(pid, TriggerKind.TOOL_DONE)

    def request_done(self, pid: str, output: int, last: bool) -> None:
        program = self.update(pid, phase=Phase.ACTING, phase_since_s=self.now_s, waiting=False,
                              steps_done=self.views[pid].steps_done + 1,
                              context_tokens=self.views[pid].context_tokens + output)
        if last:
            del self.views[pid]
            self.control(Trigger(TriggerKind.RELEASE, pid))
            return
        if program.marked_for_pause:
            self.pause(pid)
        self.control(Trigger(TriggerKind.REQUEST_DONE, pid))


def in_flight(views: dict[str, Program]) -> list[str]:
    return [p.program_id for p in views.values()
            if p.status is Status.ACTIVE and p.phase is Phase.REASONING and not p.waiting]


def acting(views: dict[str, Program]) -> list[str]:
    return [p.program_id for p in views.values() if p.phase is Phase.ACTING]


prefixes = st.sampled_from([(None, 0), ("sys", 100), ("sys", 100), ("sys", 100), ("doc", 300), ("sys", 150)])
pauses_s = st.sampled_from([0.0, 0.0, 0.25, 0.5, 1.0, 1.0, 2.0, 3.7, 6.0, 40.0])


def step(mechanism: Mechanism, data: st.DataObject) -> None:
    views = mechanism.views
    action = data.draw(st.sampled_from(["arrive", "request", "request", "tool", "tool", "time", "tick",
                                        "health"]))
    if action == "arrive" or not views:
        mechanism.arrive(data.draw(st.integers(1, 1200)), data.draw(prefixes))
    elif action == "request" and in_flight(views):
        pid = data.draw(st.sampled_from(in_flight(views)))
        mechanism.request_done(pid, data.draw(st.integers(1, 200)), last=data.draw(st.integers(0, 5)) == 0)
    elif action == "tool" and acting(views):
        mechanism.tool_done(data.draw(st.sampled_from(acting(views))), data.draw(st.integers(0, 300)))
    elif action == "time":
        mechanism.now_s += data.draw(pauses_s)
    elif action == "health" and data.draw(st.integers(0, 3)) == 0:
        index = data.draw(st.integers(0, len(mechanism.backends) - 1))
        backend = mechanism.backends[index]
        mechanism.backends[index] = dataclasses.replace(backend, healthy=not backend.healthy)
        mechanism.control(TICK)
    else:
        mechanism.control(TICK)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configs, capacities=st.lists(st.sampled_from([800, 1000, 1500, 3000]), min_size=1, max_size=4),
       data=st.data())
def test_indexed_policy_decides_like_the_reference(config, capacities, data):
    new, reference = ProgramAwarePolicy(config), ReferenceThunderPolicy(config)
    mechanism = Mechanism(new, reference, capacities)
    for _ in range(data.draw(st.integers(1, 120))):
        step(mechanism, data)


def test_a_tie_the_index_cannot_settle_is_decided_from_the_whole_view():
    # Both backends hold the same acting program, so their rooms are the same
    # float for the reference (best fit: the lower id wins the tie); the
    # index's sums carry error bounds, so it cannot call the tie itself.
    programs = {p.program_id: p for p in [
        Program("a0", 500, Phase.ACTING, Status.ACTIVE, 0, 0.3, 0.0, steps_done=1, shared_prefix_id="sys",
                shared_prefix_tokens=100),
        Program("a1", 500, Phase.ACTING, Status.ACTIVE, 1, 0.3, 0.0, steps_done=1, shared_prefix_id="sys",
                shared_prefix_tokens=100),
        Program("n", 150, Phase.REASONING, Status.PAUSED, None, 1.0, 1.0, waiting=True, paused_since_s=1.0),
    ]}
    view = ClusterView(1.0, (BackendView(0, 1000), BackendView(1, 1000)), programs)
    policy = ProgramAwarePolicy()
    trigger = Trigger(TriggerKind.ARRIVAL, "n")
    assert policy.decide(view, trigger) == ReferenceThunderPolicy(ThunderConfig()).decide(view, trigger)
    assert policy.decide(view, trigger) == (Restore("n", 0),)
    assert policy.exact_steps == 2
