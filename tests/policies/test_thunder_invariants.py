"""Invariants of one ThunderAgent control step over random snapshots."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from thunder.core.program import Phase, Program, Status
from thunder.core.view import TICK, BackendView, ClusterView, Pause, Restore
from thunder.policies.thunder.demand import BackendDemand, decay_weight
from thunder.policies.thunder.paper import ProgramAwarePolicy, ThunderConfig

NOW_S = 100.0


@st.composite
def snapshots(draw):
    n_backends = draw(st.integers(1, 4))
    backends = tuple(BackendView(i, draw(st.sampled_from([500, 1000, 2000])),
                                 healthy=draw(st.booleans()) or i == 0) for i in range(n_backends))
    programs = {}
    for i in range(draw(st.integers(0, 25))):
        status = draw(st.sampled_from([Status.ACTIVE, Status.PAUSED]))
        phase = draw(st.sampled_from(list(Phase)))
        active = status is Status.ACTIVE
        programs[f"p{i}"] = Program(
            program_id=f"p{i}", context_tokens=draw(st.integers(1, 1200)), phase=phase, status=status,
            backend=draw(st.integers(0, n_backends - 1)) if active else None,
            phase_since_s=NOW_S - draw(st.sampled_from([0.0, 0.5, 3.0, 20.0])), arrived_s=0.0,
            steps_done=draw(st.integers(0, 3)),
            marked_for_pause=active and phase is Phase.REASONING and draw(st.booleans()),
            shared_prefix_id=draw(st.sampled_from([None, "sys"])), shared_prefix_tokens=100,
            paused_since_s=None if active else NOW_S - draw(st.sampled_from([1.0, 100.0])))
    return ClusterView(now_s=NOW_S, backends=backends, programs=programs)


def resident_after(view: ClusterView, decisions, backend: int) -> BackendDemand:
    """Restore-side demand of ``backend`` once the decisions are applied."""
    paused = {d.program_id for d in decisions if isinstance(d, Pause)}
    restored = {d.program_id for d in decisions if isinstance(d, Restore) and d.backend == backend}
    demand = BackendDemand(next(b.capacity_tokens for b in view.backends if b.backend_id == backend), True)
    for p in view.programs.values():
        unbound_now = p.program_id in paused and p.phase is Phase.ACTING
        if (p.backend == backend and p.status is Status.ACTIVE and not unbound_now) or p.program_id in restored:
            demand.add(p, decay_weight(p, NOW_S, 2.0))
    return demand


@settings(max_examples=300, deadline=None)
@given(snapshots())
def test_a_step_names_each_program_once_and_keeps_backends_within_limits(view):
    decisions = ProgramAwarePolicy(ThunderConfig()).decide(view, TICK)
    assert decisions == ProgramAwarePolicy(ThunderConfig()).decide(view, TICK)  # deterministic
    named = [d.program_id for d in decisions]
    assert len(named) == len(set(named))
    healthy = {b.backend_id for b in view.backends if b.healthy}
    for d in decisions:
        program = view.programs[d.program_id]
        if isinstance(d, Pause):
            assert program.status is Status.ACTIVE and not program.marked_for_pause
        else:
            assert program.status is Status.PAUSED and d.backend in healthy
    for backend in {d.backend for d in decisions if isinstance(d, Restore)}:
        capacity = next(b.capacity_tokens for b in view.backends if b.backend_id == backend)
        demand = resident_after(view, decisions, backend)
        alone = demand.program_count == 1  # the empty-backend guard
        assert alone or demand.total_tokens <= capacity + 1e-6
