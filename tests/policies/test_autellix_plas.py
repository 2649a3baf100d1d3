"""Autellix: program-level least attained service, and locality-first routing."""

from __future__ import annotations

from policy_views import acting, new, reasoning

from thunder.core.view import BackendView, ClusterView, Dispatch, Trigger, TriggerKind
from thunder.policies import make_policy
from thunder.policies.autellix import AutellixConfig, LeastAttainedServicePolicy


def view(*programs, loads=(0, 0), healthy=(True, True)) -> ClusterView:
    backends = tuple(BackendView(i, 100_000, healthy=h, running_requests=n)
                     for i, (n, h) in enumerate(zip(loads, healthy)))
    return ClusterView(now_s=0.0, backends=backends, programs={p.program_id: p for p in programs})


def done(policy, program) -> None:
    """The program's request completed; its context is now prompt + output."""
    policy.decide(view(program), Trigger(TriggerKind.REQUEST_DONE, program.program_id))


def priority(policy, program, **kwargs) -> float:
    decision = policy.route(view(program, **kwargs), program)
    assert isinstance(decision, Dispatch)
    return decision.priority


def test_service_accumulates_per_completed_call_and_orders_requests():
    policy = make_policy("autellix")
    done(policy, acting("long", 5_000))
    done(policy, acting("long", 6_000))
    done(policy, acting("short", 2_000))
    assert policy.attained_tokens == {"long": 11_000, "short": 2_000}
    ranked = sorted(["long", "short", "fresh"],
                    key=lambda pid: priority(policy, reasoning(pid, 7_000) if pid != "fresh" else new(pid, 100)))
    assert ranked == ["fresh", "short", "long"]  # least attained service first
    assert priority(policy, new("fresh", 100)) == 0.0


def test_release_forgets_a_program_and_other_triggers_change_nothing():
    policy = LeastAttainedServicePolicy()
    done(policy, acting("a", 1_000))
    for kind in (TriggerKind.TICK, TriggerKind.TOOL_DONE, TriggerKind.ARRIVAL):
        assert policy.decide(view(acting("a", 1_000)), Trigger(kind, "a")) == ()
    assert policy.attained_tokens == {"a": 1_000}
    policy.decide(view(), Trigger(TriggerKind.RELEASE, "a"))
    assert policy.attained_tokens == {}


def test_long_requests_return_to_their_engine_short_ones_are_balanced():
    policy = LeastAttainedServicePolicy()
    long_on_1 = reasoning("a", 10_000, on=1)
    assert policy.route(view(long_on_1, loads=(0, 50)), long_on_1).backend == 1  # locality over load
    short_on_1 = reasoning("b", 1_000, on=1)
    assert policy.route(view(short_on_1, loads=(0, 50)), short_on_1).backend == 0
    fresh = new("c", 50_000)
    assert policy.route(view(fresh, loads=(9, 3)), fresh).backend == 1


def test_engine_down_or_overloaded_sends_the_program_elsewhere():
    policy = LeastAttainedServicePolicy(AutellixConfig(overload_requests=10))
    home = reasoning("a", 10_000, on=1)
    assert policy.route(view(home, loads=(0, 10)), home).backend == 1  # 10 more is not above 10
    assert policy.route(view(home, loads=(0, 11)), home).backend == 0
    assert policy.route(view(home, healthy=(True, False)), home).backend == 0
    assert policy.route(view(home, healthy=(False, False)), home).reason == "no healthy backend"
